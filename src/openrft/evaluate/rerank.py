"""Best-of-k reranking: score every sampled completion of every item with a PRM or an ORM.

A :class:`Reranker` scores every completion of every item in one batched call:

* :class:`PRMReranker` wraps a :class:`~openrft.rewards.prm.base.ProcessScorer`: each
  completion is split into steps by a named rule (:mod:`openrft.rewards.steps`), the PRM
  scores the steps, and the completion's score is their aggregate (``min``, ``mean``,
  ``last`` or ``product``, the aggregators of the RL reward; ReFT / OpenRFT style). A
  completion without steps scores 0.0, the worst, as in the reward.
* :class:`ORMReranker` wraps an outcome reward model: anything with
  ``score(questions, completions) -> list[float]``, e.g.
  :class:`~openrft.rewards.orm.OutcomeRewardModel` (a probability per completion).

What is picked from the scores (best-of-k, score-weighted voting, rerank@k, weighted_maj@k) is
:mod:`openrft.core.metrics`, shared with the PRM quality measures.
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
    "check_rerank_spec",
    "load_reranker",
]

KINDS = ("prm", "orm")


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

