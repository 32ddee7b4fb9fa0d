"""Outcome reward model (ReFT's reranker) at run time: a value head that scores a whole completion at its last token.

Input layout: ``[BOS] question "\\n" completion [EOS]`` (BOS/EOS when the tokenizer has
them); the score is ``sigmoid(value)`` at the final token, the probability that the
completion's final answer is right. The checkpoint is a value-head checkpoint (see
:mod:`openrft.rewards.prm.value_head`) with ``prm_format.json`` format ``"orm"``; training
(``openrft orm train``) is :mod:`openrft.reward_models.orm_train`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from openrft.rewards.prm.value_head import (
    ValueHeadModel, load_checkpoint, pad_id_of, question_ids, save_checkpoint, sigmoid, values_at,
)

__all__ = ["OutcomeRewardModel"]


class OutcomeRewardModel:
    """``score(questions, completions) -> [p(correct)]``, batched, one forward per ``batch_size`` completions."""

    name = "orm"

    def __init__(self, model: ValueHeadModel, tokenizer, batch_size: int = 8):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_positions = getattr(getattr(model.backbone, "config", None), "max_position_embeddings", None)

    def encode(self, question: str, completion: str) -> list[int]:
        """``[BOS] question "\\n" completion [EOS]``; the score is read at the last token."""
        ids = question_ids(self.tokenizer, question) + self.tokenizer.encode(completion, add_special_tokens=False)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def logits(self, questions: Sequence[str], completions: Sequence[str]) -> list[float]:
        if isinstance(questions, str) or isinstance(completions, str):
            raise TypeError("score takes lists of questions and completions (one question per completion)")
        if len(questions) != len(completions):
            raise ValueError(f"{len(questions)} questions for {len(completions)} completions")
        seqs = [self.encode(q, c) for q, c in zip(questions, completions)]
        for i, s in enumerate(seqs):
            if self.max_positions and len(s) > self.max_positions:
                raise ValueError(f"completion {i} is {len(s)} tokens long with its question, beyond the ORM's "
                                 f"context of {self.max_positions}")
        values = values_at(self.model, seqs, [[len(s) - 1] for s in seqs], self.batch_size,
                           pad_id_of(self.tokenizer))
        return [v[0] for v in values]

    def score(self, questions: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Probability that each completion's final answer is right, in [0, 1]."""
        return [sigmoid(v) for v in self.logits(questions, completions)]

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device=None, dtype=None,
                        batch_size: int = 8) -> "OutcomeRewardModel":
        """Load a checkpoint written by :meth:`save_pretrained` (or an ``orm train`` stage directory)."""
        model, tokenizer, _ = load_checkpoint(path, ("orm",), device=device, dtype=dtype)
        return cls(model, tokenizer, batch_size=batch_size)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        return save_checkpoint(self.model, self.tokenizer, path, {"format": "orm", "score_at": "last_token"})
