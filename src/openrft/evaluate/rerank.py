"""Best-of-k reranking and score-weighted voting over the sampled completions of each item.

A :class:`Reranker` scores every completion of every item in one batched call:

* :class:`PRMReranker` wraps a :class:`~openrft.rewards.prm.base.ProcessScorer`: each
  completion is split into steps by a named rule (:mod:`openrft.rewards.steps`), the PRM
  scores the steps, and the completion's score is their aggregate (``min``, ``mean``,
  ``last`` or ``product``, the aggregators of the RL reward; ReFT / OpenRFT style). A
  completion without steps scores 0.0, the worst, as in the reward.
* :class:`ORMReranker` wraps an outcome reward model: anything with
  ``score(questions, completions) -> list[float]``, e.g.
  :class:`~openrft.rewards.orm.OutcomeRewardModel` (a probability per completion).

Per item, over the first k completions: :func:`best_of_k` picks the highest score (ties go
to the earliest completion), :func:`weighted_vote` picks the answer whose completions have
the largest summed score (ties go to the answer stated first). ``rerank@k`` and
``weighted_maj@k`` are the accuracies of those picks, next to ``maj@k``.

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
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from openrft.rewards.base import check_probabilities
from openrft.rewards.combine import aggregate_steps, check_agg
from openrft.rewards.prm.base import ProcessScorer
from openrft.rewards.steps import step_rule as get_step_rule

__all__ = [
    "KINDS",
    "ORMReranker",
    "OutcomeScorer",
    "PRMReranker",
    "Reranker",
    "Scored",
    "best_of_k",
    "check_rerank_spec",
    "load_reranker",
    "rerank_at_k",
    "weighted_maj_at_k",
    "weighted_vote",
]

KINDS = ("prm", "orm")


# ---- selection and metrics (pure) -------------------------------------------------


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
    (as :func:`~openrft.evaluate.metrics.maj_at_k` does, so grader equivalences carry over).

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


@dataclass(frozen=True)
class Scored:
    """One completion's score; ``steps`` holds a PRM's per-step scores (``()`` for a completion with no steps)."""

    score: float
    steps: tuple[float, ...] | None = None


class OutcomeScorer(Protocol):
    """What :class:`ORMReranker` needs: one score per (question, completion) pair."""

    def score(self, questions: Sequence[str], completions: Sequence[str]) -> list[float]: ...


class Reranker(ABC):
    """Scores the sampled completions of many items at once.

    ``spec`` names the scores (``prm:<checkpoint>`` / ``orm:<path>``); it is stored with the
    scores in the eval JSONL, so a resumed evaluation knows which completions are scored already.
    """

    spec: str
    step_rule: str | None = None

    @abstractmethod
    def score(self, questions: Sequence[str], completions: Sequence[Sequence[str]]) -> list[list[Scored]]:
        """``completions[i]`` are the sampled completions of the item whose question is ``questions[i]``."""

    def identity(self) -> dict[str, Any]:
        """What makes two scorings of a completion the same (stored next to the scores)."""
        return {"spec": self.spec, "step_rule": self.step_rule}

    def close(self) -> None:  # pragma: no cover - trivial
        """Release the scoring model."""


def _flatten(questions: Sequence[str], completions: Sequence[Sequence[str]]) -> tuple[list[str], list[str], list[int]]:
    if isinstance(questions, str):
        raise TypeError("questions must be a list (one question per item), not a string")
    if len(questions) != len(completions):
        raise ValueError(f"{len(questions)} questions for {len(completions)} items of completions")
    qs, cs, sizes = [], [], []
    for q, group in zip(questions, completions):
        if isinstance(group, str):
            raise TypeError("completions[i] must be the list of item i's completions, not a string")
        sizes.append(len(group))
        qs += [q] * len(group)
        cs += list(group)
    return qs, cs, sizes


def _regroup(flat: list[Scored], sizes: list[int]) -> list[list[Scored]]:
    out, pos = [], 0
    for n in sizes:
        out.append(flat[pos:pos + n])
        pos += n
    return out


class PRMReranker(Reranker):
    """Completion score = ``agg`` over the PRM's step scores; steps cut by ``step_rule`` (0.0 without steps)."""

    def __init__(self, scorer: ProcessScorer, step_rule: str = "newline", agg: str = "min", spec: str | None = None):
        self.scorer = scorer
        self.split = get_step_rule(step_rule)
        self.step_rule = step_rule
        self.agg = check_agg(agg)
        self.spec = spec or f"prm:{getattr(scorer, 'name', type(scorer).__name__)}"

    def score(self, questions: Sequence[str], completions: Sequence[Sequence[str]]) -> list[list[Scored]]:
        qs, cs, sizes = _flatten(questions, completions)
        steps = [[st.text for st in self.split(c or "")] for c in cs]
        todo = [i for i, st in enumerate(steps) if st]
        per_step: list[list[float]] = [[] for _ in cs]
        if todo:
            got = self.scorer.score_batch([qs[i] for i in todo], [steps[i] for i in todo])
            who = f"process scorer {getattr(self.scorer, 'name', type(self.scorer).__name__)!r}"
            if len(got) != len(todo):
                raise ValueError(f"{who} returned scores for {len(got)} solutions, expected {len(todo)}")
            for i, sc in zip(todo, got):
                per_step[i] = check_probabilities(sc, len(steps[i]), who)
        flat = [Scored(aggregate_steps(sc, self.agg), tuple(sc)) for sc in per_step]
        return _regroup(flat, sizes)

    def close(self) -> None:
        self.scorer.close()


class ORMReranker(Reranker):
    """Completion score = the outcome reward model's score of (question, completion)."""

    def __init__(self, model: OutcomeScorer, spec: str | None = None):
        if not callable(getattr(model, "score", None)):
            raise TypeError(f"{type(model).__name__} has no score(questions, completions) method")
        self.model = model
        self.spec = spec or f"orm:{getattr(model, 'name', type(model).__name__)}"

    def score(self, questions: Sequence[str], completions: Sequence[Sequence[str]]) -> list[list[Scored]]:
        qs, cs, sizes = _flatten(questions, completions)
        got = [float(x) for x in self.model.score(qs, [c or "" for c in cs])] if cs else []
        if len(got) != len(cs):
            raise ValueError(f"outcome reward model returned {len(got)} scores for {len(cs)} completions")
        bad = [i for i, s in enumerate(got) if not math.isfinite(s)]
        if bad:
            raise ValueError(f"outcome reward model returned non-finite scores at {bad[:5]}: "
                             f"{[got[i] for i in bad[:5]]}")
        return _regroup([Scored(s) for s in got], sizes)

    def close(self) -> None:
        close = getattr(self.model, "close", None)
        if callable(close):
            close()


def check_rerank_spec(spec: str) -> tuple[str, str]:
    """``(kind, target)`` of ``prm:<spec>`` / ``orm:<path>``; ``ValueError`` naming the valid forms otherwise.

    >>> check_rerank_spec("prm:runs/prm/checkpoint"), check_rerank_spec("orm:judge")
    (('prm', 'runs/prm/checkpoint'), ('orm', 'judge'))
    """
    kind, sep, target = str(spec).partition(":")
    if not sep or kind not in KINDS or not target.strip():
        raise ValueError(f"rerank spec {spec!r}: use prm:<checkpoint | judge:<model> | http(s)://url> "
                         "or orm:<checkpoint>")
    return kind, target.strip()


def load_reranker(spec: str, *, agg: str = "min", step_rule: str = "newline", device: str | None = None,
                  dtype: str | None = None, batch_size: int | None = None) -> Reranker:
    """The reranker named by ``spec``: ``prm:<load_scorer spec>`` or ``orm:<OutcomeRewardModel checkpoint>``.

    The PRM/ORM modules (and torch) are imported here, on first use only.
    """
    kind, target = check_rerank_spec(spec)
    extra = {} if batch_size is None else {"batch_size": batch_size}
    if kind == "prm":
        from openrft.rewards.prm.loader import load_scorer

        scorer = load_scorer(target, device=device, dtype=dtype, **extra)
        return PRMReranker(scorer, step_rule=step_rule, agg=agg, spec=spec)
    from openrft.rewards.orm import OutcomeRewardModel

    return ORMReranker(OutcomeRewardModel.from_pretrained(target, device=device, dtype=dtype, **extra), spec=spec)

