"""Math-Shepherd PRM format (Wang et al., arXiv 2312.08935): a causal LM read at step tags.

The text is ``question + " " + step_1 + " ки\\n" + step_2 + " ки\\n" ... + step_n + " ки"``;
at the last token of each tag ``ки`` the LM's logits for the candidate tokens ``+`` and
``-`` are compared and the score is ``softmax([logit(+), logit(-)])[0]`` = P(+). One forward
pass scores every step of a completion, ``batch_size`` completions share a right-padded
forward, and only the candidate rows of the LM head are computed.

Tag positions come from the tokenizer's character offsets, so the tag need not be a single
token (the released Mistral checkpoint has ``▁ки`` as one; SmolLM2's tokenizer splits it).
Candidates must be single tokens; they are encoded without special tokens, which for
SentencePiece tokenizers gives the ``▁+``/``▁-`` tokens the released checkpoint was read at.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from openrft.rewards.prm.base import PRMFormatError
from openrft.rewards.prm.files import local_checkpoint
from openrft.rewards.prm.token_class import PositionScorer, model_max_length, resolve_device_dtype

__all__ = ["STEP_TAG", "MathShepherdPRM", "render_math_shepherd"]

STEP_TAG = "ки"


def render_math_shepherd(question: str, steps: Sequence[str], tag: str = STEP_TAG) -> tuple[str, list[int]]:
    """The scored text and the end character offset of each step's tag in it.

    >>> text, ends = render_math_shepherd("2+3?", ["2+3=5", "The answer is 5"])
    >>> text
    '2+3? 2+3=5 ки\\nThe answer is 5 ки'
    >>> [text[e - 2:e] for e in ends]
    ['ки', 'ки']
    """
    parts = [question.strip() + " "]
    ends = []
    at = len(parts[0])
    for k, step in enumerate(steps):
        piece = f"{step.strip()} {tag}"
        if k:
            piece = "\n" + piece
        parts.append(piece)
        at += len(piece)
        ends.append(at)
    return "".join(parts), ends


class MathShepherdPRM(PositionScorer):
    """Causal LM scored at step tags (Math-Shepherd format).

    Args:
        model: a causal LM.
        tokenizer: its tokenizer (a fast one gives tag positions from character offsets).
        step_tag: the tag after each step.
        candidates: the (good, bad) tokens compared at each tag, as strings or token ids.
        batch_size: completions per forward pass.
        max_length: longest sequence scored (default: the model's position limit).
    """

    name = "math_shepherd"

    def __init__(self, model: nn.Module, tokenizer, device: str | torch.device | None = None, batch_size: int = 8,
                 step_tag: str = STEP_TAG, candidates: Sequence[str | int] = ("+", "-"), max_length: int | None = None):
        dev = torch.device(device) if device is not None else next(model.parameters()).device
        super().__init__(tokenizer, dev, batch_size, model_max_length(getattr(model, "config", None), max_length))
        if len(candidates) != 2:
            raise ValueError(f"candidates must be (good, bad), got {candidates!r}")
        ids = []
        for c in candidates:
            if isinstance(c, int):
                ids.append(c)
                continue
            enc = tokenizer.encode(c, add_special_tokens=False)
            if len(enc) != 1:
                raise PRMFormatError(f"candidate {c!r} is {len(enc)} tokens for this tokenizer; give a single-token string or a token id")
            ids.append(enc[0])
        if ids[0] == ids[1]:
            raise ValueError(f"the good and bad candidates are the same token ({ids[0]})")
        self.step_tag = step_tag
        self.candidate_ids = ids
        self.model = model.to(self.device).eval()
        prefix = getattr(model, "base_model_prefix", "")
        backbone = getattr(model, prefix, None) if prefix else None
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        # read only the candidate rows of the LM head from the backbone's states when the layout is the usual one
        self._backbone = backbone if isinstance(backbone, nn.Module) and backbone is not model and isinstance(head, nn.Linear) else None
        self._head = head
        self._softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
        self._fast = bool(getattr(tokenizer, "is_fast", False))

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        batch_size: int = 8, **kwargs) -> "MathShepherdPRM":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        root = local_checkpoint(path)
        dev, dt = resolve_device_dtype(device, dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(root))
        model = AutoModelForCausalLM.from_pretrained(str(root), dtype=dt, trust_remote_code=False)
        return cls(model, tokenizer, device=dev, batch_size=batch_size, **kwargs)

    def encode(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        text, ends = render_math_shepherd(question, steps, self.step_tag)
        if self._fast:
            enc = self.tokenizer(text, return_offsets_mapping=True)
            ids, offsets = enc["input_ids"], enc["offset_mapping"]
            positions, j = [], 0
            for end in ends:  # the token that holds the tag's last character
                while j < len(ids) and not (offsets[j][0] < end <= offsets[j][1]):
                    j += 1
                if j == len(ids):
                    raise ValueError(f"{self.name}: no token covers the step tag ending at character {end}")
                positions.append(j)
                j += 1
            return list(ids), positions
        ids = self.tokenizer(text)["input_ids"]  # slow tokenizer: the last token of each prefix ending at a tag
        return list(ids), [len(self.tokenizer(text[:end])["input_ids"]) - 1 for end in ends]

    def candidate_logits(self, input_ids, attention_mask, rows, cols) -> torch.Tensor:
        """Logits of the (good, bad) candidates at ``(rows, cols)``: ``[len(rows), 2]``."""
        if self._backbone is not None:
            hidden = self._backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[rows, cols]
            head = self._head
            idx = torch.as_tensor(self.candidate_ids, device=hidden.device)
            bias = head.bias[idx] if head.bias is not None else None
            logits = nn.functional.linear(hidden, head.weight[idx], bias)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, cols][:, self.candidate_ids]
        if self._softcap:
            logits = self._softcap * torch.tanh(logits / self._softcap)
        return logits

    def probs_at(self, input_ids, attention_mask, rows, cols) -> torch.Tensor:
        return torch.softmax(self.candidate_logits(input_ids, attention_mask, rows, cols).float(), dim=-1)[:, 0]

    def close(self) -> None:
        self.model = self._backbone = self._head = None  # type: ignore[assignment]
