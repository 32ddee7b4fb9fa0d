"""Generative judge: any chat model asked, for each step, "is step k correct? yes or no".

The score of step *k* is ``P(yes) / (P(yes) + P(no))`` from the next-token distribution
after the prompt, where P(yes) sums the probabilities of every single-token spelling of
yes (``yes``, ``Yes``, `` yes``, `` Yes``, ``YES``, ...) and likewise for no. The prompt
shows the question and steps 1..k. All step prompts of all completions are sorted by
length and run ``batch_size`` at a time in left-padded forwards that compute only the last
position's logits.

This needs no PRM checkpoint, so a small instruct model (the bundled SmolLM2) works; the
scores are as good as the judge.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from openrft.rewards.prm.base import PRMFormatError, ProcessScorer, check_scores
from openrft.rewards.prm.token_class import model_max_length, pad, pad_id_of, resolve_device_dtype

__all__ = ["JUDGE_TEMPLATE", "JudgePRM"]

JUDGE_TEMPLATE = (
    "Below is a question and the first {k} step(s) of a proposed solution.\n\n"
    "Question:\n{question}\n\n"
    "Solution so far:\n{steps}\n\n"
    "Is step {k} correct? Answer with yes or no only."
)
YES = ("yes", "Yes", "YES", " yes", " Yes", " YES")
NO = ("no", "No", "NO", " no", " No", " NO")


def single_token_ids(tokenizer, variants: Sequence[str]) -> list[int]:
    """Distinct ids of the variants the tokenizer encodes as one token."""
    ids: list[int] = []
    for v in variants:
        enc = tokenizer.encode(v, add_special_tokens=False)
        if len(enc) == 1 and enc[0] not in ids:
            ids.append(enc[0])
    return ids


class JudgePRM(ProcessScorer):
    """Step scores from a chat model's yes/no next-token probabilities.

    Args:
        model: a causal LM (an instruct/chat model).
        tokenizer: its tokenizer; its chat template renders the prompt.
        template: the user message, with ``{question}``, ``{steps}`` (``Step i: ...`` lines up to
            step k) and ``{k}``.
        system: optional system message.
        yes, no: spellings of the two answers; those that are one token count.
        batch_size: step prompts per forward pass.
        max_length: longest prompt (default: the model's position limit).
    """

    name = "judge"

    def __init__(self, model: nn.Module, tokenizer, device: str | torch.device | None = None, batch_size: int = 16,
                 template: str = JUDGE_TEMPLATE, system: str | None = None, yes: Sequence[str] = YES,
                 no: Sequence[str] = NO, max_length: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.template = template
        self.system = system
        self.max_length = model_max_length(getattr(model, "config", None), max_length)
        self.yes_ids = single_token_ids(tokenizer, yes)
        self.no_ids = single_token_ids(tokenizer, no)
        if not self.yes_ids or not self.no_ids:
            raise PRMFormatError(f"the tokenizer has no single-token spelling of yes {list(yes)} or of no {list(no)}")
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError("a token counts as both yes and no")
        self.pad_id = pad_id_of(tokenizer)
        self.forward_passes = 0

    @classmethod
    def from_pretrained(cls, path: str, device: str | torch.device | None = None, dtype: str | torch.dtype | None = None,
                        batch_size: int = 16, **kwargs) -> "JudgePRM":
        """``path``: a checkpoint directory, a hub id or a bundled name (``smollm2-135m``)."""
        from openrft.models.loading import load_model

        dev, dt = resolve_device_dtype(device, dtype)
        model, tokenizer = load_model(path, dtype=dt, device=dev)
        return cls(model, tokenizer, device=dev, batch_size=batch_size, **kwargs)

    def prompt(self, question: str, steps: Sequence[str], k: int) -> str:
        """The rendered prompt asking about step ``k`` (1-based) of ``steps``."""
        shown = "\n".join(f"Step {i + 1}: {s.strip()}" for i, s in enumerate(steps[:k]))
        messages = [{"role": "user", "content": self.template.format(question=question.strip(), steps=shown, k=k)}]
        if self.system is not None:
            messages.insert(0, {"role": "system", "content": self.system})
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\nAnswer:"

    def encode(self, question: str, steps: Sequence[str], k: int) -> list[int]:
        return list(self.tokenizer(self.prompt(question, steps, k), add_special_tokens=False)["input_ids"])

    def yes_probability(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """P(yes) / (P(yes) + P(no)) after each left-padded row: ``[batch]``."""
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, logits_to_keep=1)
        logits = out.logits[:, -1].float()
        yes = torch.logsumexp(logits[:, self.yes_ids], dim=-1)
        no = torch.logsumexp(logits[:, self.no_ids], dim=-1)
        return torch.sigmoid(yes - no)

    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions for {len(steps)} step lists")
        items = []  # (completion, step index, token ids)
        for i, (q, st) in enumerate(zip(questions, steps)):
            st = [str(s) for s in st]
            for k in range(1, len(st) + 1):
                ids = self.encode(str(q), st, k)
                if len(ids) > self.max_length:
                    raise ValueError(f"{self.name}: the prompt for step {k} of solution {i} is {len(ids)} tokens, "
                                     f"over the limit of {self.max_length}")
                items.append((i, k - 1, ids))
        scores: list[list[float | None]] = [[None] * len(st) for st in steps]
        items.sort(key=lambda it: -len(it[2]))
        with torch.inference_mode():
            for b in range(0, len(items), self.batch_size):
                chunk = items[b: b + self.batch_size]
                input_ids, mask = pad([ids for _, _, ids in chunk], self.pad_id, side="left")
                probs = self.yes_probability(input_ids.to(self.device), mask.to(self.device)).cpu().tolist()
                self.forward_passes += 1
                for (i, k, _), p in zip(chunk, probs):
                    scores[i][k] = p
        return [check_scores(s, len(s), self.name) for s in scores]  # type: ignore[arg-type]

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]
