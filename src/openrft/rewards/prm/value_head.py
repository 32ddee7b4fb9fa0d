"""Value-head process reward models in the Skywork-o1-Open-PRM format.

A causal-LM backbone with a value head (``v_head.summary``: ``Linear(hidden, 1)``) on its
last hidden state. A solution is laid out as::

    [BOS] question "\\n" step_1 <step> step_2 <step> ... step_n <step>

where ``<step>`` is the step token (Skywork uses ``"\\n"``; configurable and stored in the
checkpoint) and BOS is present only when the tokenizer has one. The score of step ``k`` is
``sigmoid(value)`` at its step token; the backbone is causal, so it sees the question and
steps ``1..k`` only, and one forward pass scores every step of a solution.

Checkpoints written by :meth:`ValueHeadPRM.save_pretrained`::

    config.json + model.safetensors        the backbone (full fine-tuning), or
    adapter_config.json + adapter_model.*  a LoRA adapter on ``base_model``
    init_adapter/                          a LoRA adapter merged into the base before training (optional)
    value_head.safetensors                 v_head.summary.weight [1, hidden], v_head.summary.bias [1]
    tokenizer files
    prm_format.json                        {"format": "value_head", "step_token": "\\n", "base_model": ...,
                                            "adapter": bool, "init_adapter": bool, "hidden_size": int}

Skywork's own checkpoints (the head's ``v_head.*`` tensors inside the model's safetensors,
no ``prm_format.json``) load too, with step token ``"\\n"``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openrft.rewards.prm.base import PRMFormatError, ProcessScorer, check_scores

__all__ = [
    "CHECKPOINT_SUBDIR", "DEFAULT_STEP_TOKEN", "FORMAT_FILE", "VALUE_HEAD_FILE", "ValueHead", "ValueHeadModel",
    "ValueHeadPRM", "encode_steps", "is_value_head_checkpoint", "load_checkpoint", "question_ids", "read_format",
    "resolve_checkpoint_dir", "save_checkpoint", "step_token_id", "values_at",
]

FORMAT_FILE = "prm_format.json"
VALUE_HEAD_FILE = "value_head.safetensors"
INIT_ADAPTER = "init_adapter"
#: training stages write their checkpoint here; loaders accept the stage directory too
CHECKPOINT_SUBDIR = "checkpoint"
DEFAULT_STEP_TOKEN = "\n"
_HEAD_KEYS = ("v_head.summary.weight", "v_head.summary.bias")
#: fields save_checkpoint writes to prm_format.json besides format and step_token
_MARKER_FIELDS = {"base_model", "adapter", "init_adapter", "hidden_size", "score_at"}


class ValueHead(nn.Module):
    """``summary``: one scalar per position from the backbone's last hidden state (kept in fp32).

    ``zero_init``: start at 0 everywhere (weight and bias zero). A PPO critic wants that: returns of a 0/1
    reward lie in [0, 1], while a random head on an LM's hidden states starts at values of order 1 with
    the wrong sign and spends the first steps unlearning them (explained variance far below 0).
    """

    def __init__(self, hidden_size: int, *, zero_init: bool = False):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        if zero_init:
            nn.init.zeros_(self.summary.weight)
        else:
            nn.init.normal_(self.summary.weight, std=1.0 / math.sqrt(hidden_size))
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def _hidden_size(backbone: nn.Module) -> int:
    config = backbone.config
    for name in ("word_embed_proj_dim", "hidden_size", "n_embd", "d_model"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    get_text = getattr(config, "get_text_config", None)
    if callable(get_text) and get_text() is not config:
        return _hidden_size(type("_", (), {"config": get_text()})())
    raise PRMFormatError(f"cannot tell the hidden size of {type(backbone).__name__}; its config has no hidden_size")


class ValueHeadModel(nn.Module):
    """A causal-LM backbone (plain or peft-wrapped) and a :class:`ValueHead`.

    ``forward(input_ids, attention_mask)`` returns one value (a logit) per position, ``[B, T]``
    in fp32. The backbone's decoder is called without its LM head, so no vocabulary-sized
    logits are computed. ``base_model`` names what the backbone was loaded from (recorded in
    checkpoints so a LoRA adapter can be put back on it); ``init_adapter`` is a LoRA adapter
    directory that was merged into the base before training, if any.
    """

    def __init__(self, backbone: nn.Module, head: ValueHead | None = None, base_model: str | None = None,
                 init_adapter: str | os.PathLike | None = None):
        super().__init__()
        self.backbone = backbone
        self.v_head = head if head is not None else ValueHead(_hidden_size(backbone))
        param = next(backbone.parameters())
        self.v_head.to(device=param.device, dtype=torch.float32)
        self.base_model = base_model
        self.init_adapter = str(init_adapter) if init_adapter is not None else None

    @property
    def is_peft(self) -> bool:
        return hasattr(self.backbone, "peft_config")

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def decoder(self) -> nn.Module:
        """The backbone's transformer without its LM head (LoRA layers, injected in place, included)."""
        base = self.backbone.get_base_model() if self.is_peft else self.backbone
        get = getattr(base, "get_decoder", None)
        decoder = get() if callable(get) else None
        return decoder if decoder is not None else base

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return self.v_head(hidden)


# ---------------------------------------------------------------------------- encoding
def step_token_id(tokenizer, step_token: str) -> int:
    """The id that marks a step's end: the last token of ``step_token`` (as Skywork does)."""
    ids = tokenizer.encode(step_token, add_special_tokens=False)
    if not ids:
        raise ValueError(f"step token {step_token!r} encodes to no token with this tokenizer")
    return ids[-1]


def question_ids(tokenizer, question: str) -> list[int]:
    """BOS (when the tokenizer has one) + the question + ``"\\n"``: what precedes the first step."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    return bos + tokenizer.encode(question + "\n", add_special_tokens=False)


def encode_steps(tokenizer, question: str, steps: Sequence[str],
                 step_token: str = DEFAULT_STEP_TOKEN) -> tuple[list[int], list[int]]:
    """``(input_ids, flag_positions)``: BOS (if any) + question + ``"\\n"``, then each step followed by the step token.

    ``flag_positions[k]`` is the index of step ``k``'s step token, where its score is read.
    """
    ids = question_ids(tokenizer, question)
    flag_id = step_token_id(tokenizer, step_token)
    flags: list[int] = []
    for step in steps:
        ids += tokenizer.encode(str(step), add_special_tokens=False)
        ids.append(flag_id)
        flags.append(len(ids) - 1)
    return ids, flags


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``(input_ids, attention_mask)``: real tokens keep positions ``0..len-1``."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


def sigmoid(x: float) -> float:
    """Logistic function that does not overflow for large ``|x|``.

    >>> sigmoid(0.0), sigmoid(-1000.0), sigmoid(1000.0)
    (0.5, 0.0, 1.0)
    """
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def pad_id_of(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


@torch.inference_mode()
def values_at(model: ValueHeadModel, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
              batch_size: int, pad_id: int) -> list[list[float]]:
    """Values (logits) of ``model`` at ``positions[i]`` of ``seqs[i]``; longest first, ``batch_size`` a forward."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out: list[list[float]] = [[] for _ in seqs]
    order = sorted((i for i in range(len(seqs)) if positions[i]), key=lambda i: -len(seqs[i]))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            ids, mask = pad_right([seqs[i] for i in chunk], pad_id)
            values = model(ids.to(model.device), mask.to(model.device)).float().cpu()
            for row, i in enumerate(chunk):
                out[i] = values[row, list(positions[i])].tolist()
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------- checkpoints
def resolve_checkpoint_dir(path: str | os.PathLike) -> Path:
    """``path`` itself, or its ``checkpoint/`` when ``path`` is a training stage's directory."""
    path = Path(path).expanduser()
    if not (path / FORMAT_FILE).is_file() and (path / CHECKPOINT_SUBDIR / FORMAT_FILE).is_file():
        return path / CHECKPOINT_SUBDIR
    return path


def _safetensors_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        except (OSError, json.JSONDecodeError):
            return []
        return sorted({path / f for k, f in weight_map.items() if k.startswith("v_head.")})
    return sorted(path.glob("*.safetensors"))


def _native_head(path: Path) -> dict[str, torch.Tensor] | None:
    """The ``v_head.*`` tensors stored inside a Skywork-style checkpoint's weights, or None."""
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    for f in _safetensors_files(path):
        if f.name == VALUE_HEAD_FILE:
            continue
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    if key in _HEAD_KEYS:
                        found[key] = st.get_tensor(key)
        except Exception:  # noqa: BLE001 - an unreadable file just is not a value-head checkpoint
            continue
    return found if set(found) == set(_HEAD_KEYS) else None


def _local_dir(path: str | os.PathLike) -> Path | None:
    p = Path(path).expanduser()
    if p.is_dir():
        return resolve_checkpoint_dir(p)
    name = str(path)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):  # a hub id already in the local cache
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name, local_files_only=True))
        except Exception:  # noqa: BLE001 - not cached (or no hub library): not ours to load
            return None
    return None


def read_format(path: str | os.PathLike) -> dict[str, Any] | None:
    """The checkpoint's ``prm_format.json`` (``{"format": "skywork", ...}`` for a native Skywork one), or None."""
    local = _local_dir(path)
    if local is None:
        return None
    fmt_file = local / FORMAT_FILE
    if fmt_file.is_file():
        try:
            meta = json.loads(fmt_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise PRMFormatError(f"{fmt_file}: malformed JSON ({err.msg}, line {err.lineno})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("format"), str):
            raise PRMFormatError(f"{fmt_file}: expected an object with a 'format' field")
        return meta
    if (local / "config.json").is_file() and _native_head(local) is not None:
        return {"format": "skywork", "step_token": DEFAULT_STEP_TOKEN, "adapter": False}
    return None


def is_value_head_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` (a directory, a training stage directory, or a cached hub id) is a value-head PRM."""
    try:
        meta = read_format(path)
    except PRMFormatError:
        return False
    return meta is not None and meta["format"] in ("value_head", "skywork")


def save_checkpoint(model: ValueHeadModel, tokenizer, path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``model`` (backbone or LoRA adapter, head, tokenizer) and ``prm_format.json`` (``meta`` + adapter info)
    to ``path`` atomically."""
    from safetensors.torch import save_file

    from openrft.models.lora import save_atomic

    adapter = model.is_peft
    if adapter and not model.base_model:
        raise ValueError("a LoRA value-head model needs base_model (what the adapter goes on) to be saved")
    meta = dict(meta) | {"base_model": model.base_model, "adapter": adapter,
                         "init_adapter": model.init_adapter is not None and adapter,
                         "hidden_size": model.v_head.summary.in_features}

    def save(tmp: Path) -> None:
        model.backbone.save_pretrained(tmp, safe_serialization=True)
        if adapter and model.init_adapter is not None:
            from openrft.models.lora import resolve_adapter_dir

            shutil.copytree(resolve_adapter_dir(model.init_adapter), tmp / INIT_ADAPTER)
        head = {k: v.detach().float().cpu().contiguous() for k, v in
                zip(_HEAD_KEYS, (model.v_head.summary.weight, model.v_head.summary.bias))}
        save_file(head, str(tmp / VALUE_HEAD_FILE))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / FORMAT_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    return save_atomic(save, path)


def load_checkpoint(path: str | os.PathLike, formats: Sequence[str], device=None, dtype=None):
    """``(ValueHeadModel, tokenizer, meta)`` from a checkpoint whose format is one of ``formats``; eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openrft.models.loading import default_device, load_model, parse_dtype

    local = _local_dir(path)
    meta = read_format(path) if local is not None else None
    if meta is None:
        raise PRMFormatError(
            f"{path} is not a value-head checkpoint: no {FORMAT_FILE} there (nor in {CHECKPOINT_SUBDIR}/), and no "
            "v_head.* tensors in its weights; give a directory written by 'openrft prm train' / 'openrft orm train' "
            "or a Skywork-o1-Open-PRM checkpoint")
    if meta["format"] not in formats:
        hint = {"orm": "it is an outcome reward model: load it with openrft.rewards.orm.OutcomeRewardModel",
                "value_head": "it is a process reward model: load it with ValueHeadPRM",
                "skywork": "it is a process reward model: load it with ValueHeadPRM"}.get(meta["format"], "")
        raise PRMFormatError(f"{path} has format {meta['format']!r}, expected {' or '.join(formats)}"
                             + (f"; {hint}" if hint else ""))
    device = torch.device(device) if device is not None else default_device()
    torch_dtype = parse_dtype(dtype, device)
    if meta.get("adapter"):
        from peft import PeftModel

        if not meta.get("base_model"):
            raise PRMFormatError(f"{local / FORMAT_FILE}: a LoRA checkpoint without 'base_model'")
        backbone, _ = load_model(meta["base_model"], dtype=torch_dtype, device=device)
        if meta.get("init_adapter"):
            backbone = PeftModel.from_pretrained(backbone, str(local / INIT_ADAPTER)).merge_and_unload()
        backbone = PeftModel.from_pretrained(backbone, str(local))
    else:
        backbone = AutoModelForCausalLM.from_pretrained(str(local), dtype=torch_dtype).to(device)
    head_file = local / VALUE_HEAD_FILE
    tensors = load_file(str(head_file)) if head_file.is_file() else _native_head(local)
    if tensors is None or set(_HEAD_KEYS) - set(tensors):
        raise PRMFormatError(f"{local}: value head weights {', '.join(_HEAD_KEYS)} not found ({VALUE_HEAD_FILE})")
    weight = tensors["v_head.summary.weight"].reshape(1, -1)
    head = ValueHead(weight.shape[1])
    with torch.no_grad():
        head.summary.weight.copy_(weight.float())
        head.summary.bias.copy_(tensors["v_head.summary.bias"].reshape(1).float())
    model = ValueHeadModel(backbone, head, base_model=meta.get("base_model") or str(path))
    model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(str(local))
    tokenizer.padding_side = "right"
    return model, tokenizer, meta


# ---------------------------------------------------------------------------- the scorer
class ValueHeadPRM(ProcessScorer):
    """Scores steps with a :class:`ValueHeadModel`: many solutions per padded forward, one pass per solution.

    Args:
        model: backbone + value head.
        tokenizer: the backbone's tokenizer.
        step_token: text appended after each step; its last token is where the score is read.
        batch_size: solutions per forward pass.
    """

    name = "value_head"

    def __init__(self, model: ValueHeadModel, tokenizer, step_token: str = DEFAULT_STEP_TOKEN, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.step_token = step_token
        self.batch_size = batch_size
        step_token_id(tokenizer, step_token)  # fails early for a token the tokenizer cannot encode
        self.max_positions = getattr(getattr(model.backbone, "config", None), "max_position_embeddings", None)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        return encode_steps(self.tokenizer, question, steps, self.step_token)

    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions for {len(steps)} step lists")
        if isinstance(steps, str) or any(isinstance(s, str) for s in steps):
            raise TypeError("steps must be a list of step lists (one list of strings per solution), not strings")
        seqs: list[list[int]] = []
        flags: list[list[int]] = []
        for i, (q, st) in enumerate(zip(questions, steps)):
            ids, fl = self.encode(q, st) if st else ([], [])
            if self.max_positions and len(ids) > self.max_positions:
                raise ValueError(f"solution {i} is {len(ids)} tokens long with its question, beyond the PRM's "
                                 f"context of {self.max_positions}; score fewer or shorter steps")
            seqs.append(ids)
            flags.append(fl)
        values = values_at(self.model, seqs, flags, self.batch_size, pad_id_of(self.tokenizer))
        return [check_scores([sigmoid(v) for v in vals], len(st), self.name)
                for vals, st in zip(values, steps)]

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, dtype=None, batch_size: int = 8,
                        step_token: str | None = None, **marker: Any) -> "ValueHeadPRM":
        """Load a checkpoint from :meth:`save_pretrained`, a training stage directory, or a Skywork-o1 PRM.

        ``step_token`` overrides the checkpoint's (Skywork's own checkpoints carry none: ``"\\n"``).
        ``marker`` takes the other ``prm_format.json`` fields a generic loader may pass back
        (``base_model``, ``adapter``, ...); they are read from the checkpoint itself, so they are ignored.
        """
        unknown = sorted(set(marker) - _MARKER_FIELDS)
        if unknown:
            raise TypeError(f"ValueHeadPRM.from_pretrained() got an unexpected keyword argument {unknown[0]!r}")
        model, tokenizer, meta = load_checkpoint(path, ("value_head", "skywork"), device=device, dtype=dtype)
        token = step_token if step_token is not None else meta.get("step_token", DEFAULT_STEP_TOKEN)
        return cls(model, tokenizer, step_token=token, batch_size=batch_size)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        meta = {"format": "value_head", "step_token": self.step_token}
        return save_checkpoint(self.model, self.tokenizer, path, meta)

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
