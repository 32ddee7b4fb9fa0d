"""Token-classification PRM (Qwen2.5-Math-PRM format): a 2-class head read at each step separator.

The text is the chat template with the system prompt :data:`QWEN_PRM_SYSTEM`, the question
as the user turn and the steps joined by ``<extra_0>`` (plus a trailing one) as the
assistant turn. The score of step *k* is ``softmax(head(h))[1]`` at the *k*-th
``<extra_0>``. One forward pass scores every step of a completion (causal attention: the
state at the *k*-th separator sees steps 1..k only), and ``batch_size`` completions share a
right-padded forward.

Qwen's ``Qwen2ForProcessRewardModel`` ships as remote code; here the backbone loads with
``AutoModel`` (no remote code, works offline) and the head is rebuilt from the checkpoint's
``score.*`` tensors: ``Sequential(Linear(h, h), ReLU, Linear(h, 2))`` (``score.0``/``score.2``)
or a plain ``Linear(h, 2)`` (``score``, as saved by ``*ForTokenClassification`` models).

This module also holds :class:`PositionScorer`, the batching shared with the Math-Shepherd scorer.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from openrft.rewards.prm.base import PRMFormatError, ProcessScorer, check_scores
from openrft.rewards.prm.files import local_checkpoint, safetensors_files

__all__ = ["QWEN_PRM_SYSTEM", "PositionScorer", "TokenClassPRM", "read_head_tensors", "resolve_device_dtype"]

logger = logging.getLogger(__name__)

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
SEPARATOR = "<extra_0>"


# ---------------------------------------------------------------------------- shared helpers
def resolve_device_dtype(device: str | torch.device | None, dtype: str | torch.dtype | None) -> tuple[torch.device, torch.dtype]:
    """``device`` (default: cuda if available) and ``dtype`` (default: bf16 on cuda, fp32 elsewhere)."""
    from openrft.models.loading import default_device, parse_dtype

    dev = torch.device(device) if device is not None else default_device()
    return dev, parse_dtype(dtype, dev)


def pad(seqs: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``seqs`` padded to the longest on ``side``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        if side == "right":
            ids[r, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
            mask[r, : len(s)] = 1
        else:
            ids[r, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[r, width - len(s):] = 1
    return ids, mask


def pad_id_of(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if tid is not None:
            return int(tid)
    return 0  # pragma: no cover


def model_max_length(config, override: int | None) -> int:
    if override is not None:
        return int(override)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30


def read_head_tensors(path: str | Path, prefix: str = "score.") -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix``, read from the checkpoint's safetensors without loading the rest."""
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    for file in safetensors_files(path):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key.startswith(prefix):
                    out[key] = f.get_tensor(key)
    return out


def head_from_tensors(tensors: dict[str, torch.Tensor], where: str) -> nn.Module:
    """``Sequential(Linear, ReLU, Linear)`` from ``score.0.*``/``score.2.*`` or ``Linear`` from ``score.*``."""
    names = sorted(tensors)
    if {"score.0.weight", "score.2.weight"} <= set(tensors):
        w0, w2 = tensors["score.0.weight"], tensors["score.2.weight"]
        head: nn.Module = nn.Sequential(
            nn.Linear(w0.shape[1], w0.shape[0], bias="score.0.bias" in tensors), nn.ReLU(),
            nn.Linear(w2.shape[1], w2.shape[0], bias="score.2.bias" in tensors),
        )
        state = {k.removeprefix("score."): v for k, v in tensors.items()}
    elif "score.weight" in tensors:
        w = tensors["score.weight"]
        head = nn.Linear(w.shape[1], w.shape[0], bias="score.bias" in tensors)
        state = {k.removeprefix("score."): v for k, v in tensors.items()}
    else:
        raise PRMFormatError(
            f"{where}: no token-classification head (expected score.0.*/score.2.* or score.weight tensors); found {names or 'none'}"
        )
    out_features = head[-1].out_features if isinstance(head, nn.Sequential) else head.out_features
    if out_features != 2:
        raise PRMFormatError(f"{where}: the score head has {out_features} outputs; a token-classification PRM has 2")
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise PRMFormatError(f"{where}: score head tensors do not fit the head ({err})") from None
    return head


class PositionScorer(ProcessScorer):
    """A PRM that reads one score per step at known token positions of a single sequence.

    Subclasses implement :meth:`encode` (question + steps -> token ids and one position per
    step) and :meth:`probs_at` (hidden states -> probabilities at the given positions).
    :meth:`score_batch` sorts the completions by length, pads ``batch_size`` of them on the
    right and runs one forward per batch.
    """

    def __init__(self, tokenizer, device: torch.device, batch_size: int = 8, max_length: int = 1 << 30):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.pad_id = pad_id_of(tokenizer)
        self.forward_passes = 0  # counted for benchmarks and tests

    @abstractmethod
    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Token ids of the scored text and the position of each step's score in it."""

    @abstractmethod
    def probs_at(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """P(step correct) at ``(rows[i], cols[i])`` of a padded batch, shape ``[len(rows)]``."""

    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions for {len(steps)} step lists")
        out: list[list[float]] = [[] for _ in steps]
        items = []
        for i, (q, st) in enumerate(zip(questions, steps)):
            st = [str(s) for s in st]
            if not st:
                continue
            ids, positions = self.encode(str(q), st)
            if len(positions) != len(st):  # pragma: no cover - encode guarantees it
                raise RuntimeError(f"{self.name}: {len(positions)} score positions for {len(st)} steps")
            if len(ids) > self.max_length:
                raise ValueError(
                    f"{self.name}: solution {i} is {len(ids)} tokens, over the scorer's limit of {self.max_length}; "
                    "shorten the completions (max_new_tokens) or raise max_length"
                )
            items.append((i, ids, positions))
        items.sort(key=lambda it: -len(it[1]))
        with torch.inference_mode():
            for b in range(0, len(items), self.batch_size):
                chunk = items[b: b + self.batch_size]
                input_ids, mask = pad([ids for _, ids, _ in chunk], self.pad_id, side="right")
                rows = torch.cat([torch.full((len(p),), r, dtype=torch.long) for r, (_, _, p) in enumerate(chunk)])
                cols = torch.cat([torch.as_tensor(p, dtype=torch.long) for _, _, p in chunk])
                probs = self.probs_at(input_ids.to(self.device), mask.to(self.device),
                                      rows.to(self.device), cols.to(self.device))
                self.forward_passes += 1
                flat = probs.float().cpu().tolist()
                at = 0
                for i, _, positions in chunk:
                    out[i] = check_scores(flat[at: at + len(positions)], len(positions), self.name)
                    at += len(positions)
        return out


def hidden_at(backbone: nn.Module, input_ids, attention_mask, rows, cols) -> torch.Tensor:
    """Last hidden states of ``backbone`` at ``(rows, cols)``: ``[len(rows), hidden]``."""
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return hidden[rows, cols]


# ---------------------------------------------------------------------------- the scorer
class TokenClassPRM(PositionScorer):
    """Qwen2.5-Math-PRM-style scorer: ``backbone`` + 2-class ``head`` read at each ``separator`` token.

    Args:
        backbone: a transformers base model (``AutoModel``), returning ``last_hidden_state``.
        head: maps hidden states to 2 logits; the score is ``softmax(logits)[1]``.
        tokenizer: must encode ``separator`` as one token and have a chat template
            (a plain ChatML layout is used without one).
        system: system prompt of the chat (Qwen's PRM was trained with :data:`QWEN_PRM_SYSTEM`).
        batch_size: completions per forward pass.
        max_length: longest sequence scored (default: the model's position limit).
    """

    name = "token_class"

    def __init__(self, backbone: nn.Module, head: nn.Module, tokenizer, device: str | torch.device | None = None,
                 batch_size: int = 8, separator: str = SEPARATOR, system: str | None = QWEN_PRM_SYSTEM,
                 max_length: int | None = None):
        dev = torch.device(device) if device is not None else next(backbone.parameters()).device
        super().__init__(tokenizer, dev, batch_size, model_max_length(getattr(backbone, "config", None), max_length))
        ids = tokenizer.encode(separator, add_special_tokens=False)
        if len(ids) != 1:
            raise PRMFormatError(
                f"the tokenizer encodes the step separator {separator!r} as {len(ids)} tokens; a token-classification "
                "PRM needs it as one (special) token: tokenizer.add_special_tokens({'additional_special_tokens': [...]}) "
                "before training, or use the checkpoint's own tokenizer"
            )
        self.separator = separator
        self.separator_id = ids[0]
        self.system = system
        dtype = next(backbone.parameters()).dtype
        self.backbone = backbone.to(self.device).eval()
        self.head = head.to(self.device, dtype).eval()

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        batch_size: int = 8, **kwargs) -> "TokenClassPRM":
        """Load a checkpoint in Qwen2.5-Math-PRM layout (``model.*`` backbone + ``score.*`` head), offline, no remote code."""
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        root = local_checkpoint(path)
        dev, dt = resolve_device_dtype(device, dtype)
        head = head_from_tensors(read_head_tensors(root), str(root))
        tokenizer = AutoTokenizer.from_pretrained(str(root))
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the score.* tensors are "unexpected" for the backbone: expected here
        try:
            backbone, info = AutoModel.from_pretrained(str(root), dtype=dt, trust_remote_code=False,
                                                       output_loading_info=True)
        finally:
            hf_logging.set_verbosity(verbosity)
        if info.get("missing_keys"):
            missing = sorted(info["missing_keys"])
            raise PRMFormatError(
                f"{root}: the backbone weights were not found in the checkpoint (missing {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}); is this a token-classification PRM?"
            )
        return cls(backbone, head, tokenizer, device=dev, batch_size=batch_size, **kwargs)

    def render(self, question: str, steps: Sequence[str]) -> str:
        """The full text scored for ``steps``; a separator inside the question or a step is removed."""
        sep = self.separator
        answer = sep.join(s.replace(sep, "") for s in steps) + sep
        messages = [{"role": "user", "content": question.replace(sep, "")}, {"role": "assistant", "content": answer}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        ids = self.tokenizer(self.render(question, steps), add_special_tokens=False)["input_ids"]
        positions = [j for j, t in enumerate(ids) if t == self.separator_id]
        if len(positions) != len(steps):
            raise ValueError(
                f"{self.name}: found {len(positions)} separator tokens for {len(steps)} steps; the chat template "
                f"must keep {self.separator!r} in the assistant turn"
            )
        return ids, positions

    def probs_at(self, input_ids, attention_mask, rows, cols) -> torch.Tensor:
        logits = self.head(hidden_at(self.backbone, input_ids, attention_mask, rows, cols))
        return torch.softmax(logits.float(), dim=-1)[:, 1]

    def close(self) -> None:
        self.backbone = self.head = None  # type: ignore[assignment]
