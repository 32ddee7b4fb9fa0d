"""Accuracy over sampled runs, majority voting, pass@k, and picking among scored replies (pure; layer 0).

Inputs are per-item lists over the n samples of each item: ``correct[i][j]`` is whether
sample j of item i was graded right, ``answers[i][j]`` its extracted answer (``None``
when it stated none), ``scores[i][j]`` a reward model's score of it.

Per item, over the first k completions: :func:`best_of_k` picks the highest score (ties go
to the earliest completion), :func:`weighted_vote` picks the answer whose completions have
the largest summed score (ties go to the answer stated first). ``rerank@k`` and
``weighted_maj@k`` are the accuracies of those picks, next to ``maj@k``. Evaluation
(:mod:`openrft.evaluate`) and the PRM quality measures (:mod:`openrft.reward_models.quality`)
both use them.

>>> scores = [[0.2, 0.9, 0.9], [0.7, 0.1, 0.3]]
>>> [best_of_k(s) for s in scores]
[1, 0]
>>> rerank_at_k(scores, [[False, True, False], [False, True, True]], k=3)
0.5
>>> weighted_vote(["12", "15", "15"], [0.9, 0.4, 0.4]), weighted_vote(["12", "15", "15"], [0.9, 0.5, 0.5])
('12', '15')
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


# ---- picking among scored replies ---------------------------------------------------


def best_of_k(scores: Sequence[float], k: int | None = None) -> int:
    """Index of the highest score among the first ``k`` (all when ``k`` is None); ties go to the earliest.

    >>> best_of_k([0.5, 0.8, 0.8, 0.1]), best_of_k([0.5, 0.8, 0.9], k=2), best_of_k([0.3])
    (1, 1, 0)
    """
    window = scores[:k] if k else scores
    if len(window) == 0:
        raise ValueError("best_of_k needs at least one scored completion")
    best = 0
    for i, s in enumerate(window):
        if s > window[best]:
            best = i
    return best


def weighted_vote(answers: Sequence[str | None], scores: Sequence[float], k: int | None = None) -> str | None:
    """The stated answer with the largest summed score among the first ``k``; ties go to the answer stated
    first; ``None`` (no answer) never wins. Scores are the weights and must not be negative.

    >>> weighted_vote(["A", "B", "B"], [0.9, 0.5, 0.3])  # 0.9 vs 0.8
    'A'
    >>> weighted_vote(["A", "B"], [0.5, 0.5]), weighted_vote([None, "C"], [1.0, 0.0]), weighted_vote([None], [1.0])
    ('A', 'C', None)
    """
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers for {len(scores)} scores")
    n = k if k else len(answers)
    weights: dict[str, list[float]] = {}  # insertion order = order first stated
    for a, s in zip(answers[:n], scores[:n]):
        if not s >= 0.0:  # also NaN
            raise ValueError(f"weighted voting needs scores >= 0 (probabilities), got {s!r}")
        if a is not None:
            weights.setdefault(a, []).append(float(s))
    if not weights:
        return None
    totals = {a: math.fsum(w) for a, w in weights.items()}
    top = max(totals.values())
    return next(a for a, t in totals.items() if t == top)


def rerank_at_k(scores: Sequence[Sequence[float]], correct: Sequence[Sequence[bool]], k: int) -> float:
    """rerank@k (best-of-k): fraction of items whose highest-scored completion among the first k is correct.

    >>> rerank_at_k([[0.1, 0.9], [0.5, 0.5]], [[False, True], [False, True]], k=2)  # item 2: tie -> first
    0.5
    """
    if not scores:
        return float("nan")
    return sum(bool(ok[best_of_k(sc, k)]) for sc, ok in zip(scores, correct, strict=True)) / len(scores)


def weighted_maj_at_k(answers: Sequence[Sequence[str | None]], scores: Sequence[Sequence[float]],
                      correct: Sequence[Sequence[bool]], k: int) -> float:
    """weighted_maj@k: the score-weighted vote is right when a sample stating it was graded right
    (as :func:`maj_at_k` does, so grader equivalences carry over).

    >>> weighted_maj_at_k([["7", "8", "8"]], [[0.9, 0.2, 0.3]], [[True, False, False]], k=3)
    1.0
    """
    if not answers:
        return float("nan")
    hits = 0
    for ans, sc, ok in zip(answers, scores, correct, strict=True):
        voted = weighted_vote(ans, sc, k)
        hits += voted is not None and any(a == voted and c for a, c in zip(ans[:k], ok[:k]))
    return hits / len(answers)


# ---- rerankers ----------------------------------------------------------------------
