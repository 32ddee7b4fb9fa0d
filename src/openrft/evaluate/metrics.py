"""Accuracy over sampled runs, majority voting and pass@k.

Inputs are per-item lists over the n samples of each item: ``correct[i][j]`` is whether
sample j of item i was graded right, ``answers[i][j]`` its extracted answer (``None``
when it stated none).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RunAccuracy:
    """Accuracy of each sampled run (run j = sample j of every item), their mean and spread."""

    per_run: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.per_run) / len(self.per_run) if self.per_run else float("nan")

    @property
    def std(self) -> float:
        """Sample standard deviation over runs (0 for a single run)."""
        n = len(self.per_run)
        if n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((a - m) ** 2 for a in self.per_run) / (n - 1))


def run_accuracy(correct: Sequence[Sequence[bool]]) -> RunAccuracy:
    """OpenRFT protocol: accuracy of each of the n sampled runs, then their mean.

    >>> r = run_accuracy([[True, False, True], [True, True, False]])
    >>> r.per_run, round(r.mean, 3), round(r.std, 3)
    ((1.0, 0.5, 0.5), 0.667, 0.289)
    """
    if not correct:
        return RunAccuracy(())
    n = min(len(row) for row in correct)
    return RunAccuracy(tuple(sum(bool(row[j]) for row in correct) / len(correct) for j in range(n)))


def majority_vote(answers: Sequence[str | None], k: int | None = None) -> str | None:
    """Most frequent stated answer among the first ``k``; ties go to the answer stated first; ``None`` never wins.

    >>> majority_vote(["B", None, "C", "C", None, None])
    'C'
    >>> majority_vote(["B", "C"])  # tie: first stated
    'B'
    >>> majority_vote([None, None]) is None
    True
    """
    window = [a for a in (answers[:k] if k else answers) if a is not None]
    if not window:
        return None
    counts = Counter(window)
    best = max(counts.values())
    return next(a for a in window if counts[a] == best)


def maj_at_k(answers: Sequence[Sequence[str | None]], golds_correct: Sequence[Sequence[bool]], k: int) -> float:
    """maj@k accuracy: the voted answer of each item is right when a sample stating it was graded right.

    Using the grader's own verdicts keeps equivalences (``18`` vs ``18.0``) consistent with accuracy.

    >>> maj_at_k([["A", "B", "B"], ["C", None, "D"]], [[False, True, True], [True, False, False]], k=3)
    1.0
    """
    if not answers:
        return float("nan")
    hits = 0
    for ans, ok in zip(answers, golds_correct):
        voted = majority_vote(ans, k)
        hits += voted is not None and any(a == voted and c for a, c in zip(ans[:k], ok[:k]))
    return hits / len(answers)


def pass_at_k_item(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one item with ``c`` of ``n`` samples correct (Chen et al., 2021).

    >>> pass_at_k_item(4, 1, 1), pass_at_k_item(4, 1, 4), pass_at_k_item(4, 0, 2)
    (0.25, 1.0, 0.0)
    """
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per item, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def pass_at_k(correct: Sequence[Sequence[bool]], k: int) -> float:
    """Mean unbiased pass@k over items.

    >>> pass_at_k([[True, False], [False, False]], k=2)
    0.5
    """
    if not correct:
        return float("nan")
    return sum(pass_at_k_item(len(r), sum(map(bool, r)), k) for r in correct) / len(correct)


def answered_rate(answers: Sequence[Sequence[str | None]]) -> float:
    """Fraction of samples that stated an extractable answer.

    >>> answered_rate([["A", None], ["B", "C"]])
    0.75
    """
    total = sum(len(r) for r in answers)
    return sum(a is not None for r in answers for a in r) / total if total else float("nan")
