"""The process-scorer contract: ``score(question, steps) -> one score in [0, 1] per step``.

Every PRM format (value head, token classification, Math-Shepherd tag, generative judge,
remote HTTP) implements :class:`ProcessScorer`. ``score_batch`` is the hot path: the RL loop
and reranking hand it every completion of a step at once, and local scorers score all the
steps of one completion in a single forward pass.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

__all__ = ["PRMFormatError", "ProcessScorer", "check_scores"]


class PRMFormatError(ValueError):
    """A checkpoint or endpoint is not in a PRM format openrft can score with."""


def check_scores(scores: Sequence[float], n_steps: int, who: str) -> list[float]:
    """Validate one completion's step scores: one finite float per step."""
    out = [float(s) for s in scores]
    if len(out) != n_steps:
        raise ValueError(f"{who} returned {len(out)} step scores for {n_steps} steps")
    bad = [i for i, s in enumerate(out) if not math.isfinite(s)]
    if bad:
        raise ValueError(f"{who} returned a non-finite score for step(s) {bad}: {[out[i] for i in bad]}")
    return out


class ProcessScorer(ABC):
    """Scores the steps of a solution. Scores are probabilities that each step is correct, in [0, 1]."""

    name: str = "prm"

    def score(self, question: str, steps: Sequence[str]) -> list[float]:
        """Scores for the steps of one solution; ``[]`` when there are no steps."""
        return self.score_batch([question], [steps])[0]

    @abstractmethod
    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        """Scores for many solutions: ``steps[i]`` are the steps of a solution to ``questions[i]``."""

    def close(self) -> None:  # pragma: no cover - trivial
        """Release resources (HTTP sessions, models)."""
