"""Outcome + process: ``alpha * outcome + (1 - alpha) * f(step scores)`` (OpenRFT, eq. 1).

``f`` is a named aggregator over one completion's step scores. A completion with no steps
has no process evidence and gets the worst process part, 0.0 (callers count such
completions; see :class:`~openrft.rewards.base.RewardBatch`).

>>> aggregate_steps([0.9, 0.5, 0.7], "min"), aggregate_steps([0.5, 0.5], "product")
(0.5, 0.25)
>>> combine(1.0, [0.5, 1.0], alpha=0.5, agg="mean")
0.875
>>> combine(1.0, [], alpha=0.5)  # no steps: process part 0.0
0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

__all__ = ["AGGREGATORS", "aggregate_steps", "check_agg", "check_alpha", "combine"]


def _mean(scores: Sequence[float]) -> float:
    return math.fsum(scores) / len(scores)


def _product(scores: Sequence[float]) -> float:
    return math.prod(scores)


AGGREGATORS: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": _mean,
    "min": min,
    "last": lambda s: s[-1],
    "product": _product,
}


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, or ``ValueError`` when it is not in [0, 1]."""
    a = float(alpha)
    if not 0.0 <= a <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1] (weight of the outcome reward), got {alpha!r}")
    return a


def check_agg(agg: str) -> str:
    if agg not in AGGREGATORS:
        raise ValueError(f"unknown step aggregator {agg!r}; valid: {', '.join(AGGREGATORS)}")
    return agg


def aggregate_steps(scores: Sequence[float], agg: str = "mean") -> float:
    """One number for a completion's step scores; ``0.0`` (the worst) when there are none.

    ``mean`` rewards steady reasoning, ``min`` punishes the worst step (a chain is as good as
    its weakest link), ``last`` trusts the PRM's verdict after the final step, ``product``
    is the probability that every step is right when the scores are independent.
    """
    fn = AGGREGATORS[check_agg(agg)]
    if len(scores) == 0:
        return 0.0
    return float(fn([float(s) for s in scores]))


def combine(outcome: float, step_scores: Sequence[float], alpha: float = 0.7, agg: str = "mean") -> float:
    """``alpha * outcome + (1 - alpha) * aggregate_steps(step_scores, agg)`` for one completion."""
    a = check_alpha(alpha)
    return a * float(outcome) + (1.0 - a) * aggregate_steps(step_scores, agg)
