"""Step aggregation and alpha * outcome + (1 - alpha) * f(steps), checked against plain arithmetic."""

from __future__ import annotations

import math

import pytest

from openrft.rewards.combine import AGGREGATORS, aggregate_steps, combine

SCORES = [0.9, 0.4, 0.8]


@pytest.mark.parametrize("agg, expected", [("mean", 0.7), ("min", 0.4), ("last", 0.8), ("product", 0.9 * 0.4 * 0.8)])
def test_aggregators(agg, expected):
    assert aggregate_steps(SCORES, agg) == pytest.approx(expected)
    assert set(AGGREGATORS) == {"mean", "min", "last", "product"}


def test_combine_weights_outcome_and_process():
    for alpha in (0.0, 0.3, 0.7, 1.0):
        for outcome in (0.0, 0.1, 1.0):
            assert combine(outcome, SCORES, alpha, "min") == pytest.approx(alpha * outcome + (1 - alpha) * 0.4)
    assert combine(1.0, SCORES, alpha=1.0) == 1.0  # outcome only


@pytest.mark.parametrize("agg", sorted(AGGREGATORS))
def test_no_steps_is_the_worst_process_part(agg):
    assert aggregate_steps([], agg) == 0.0
    assert combine(1.0, [], alpha=0.7, agg=agg) == pytest.approx(0.7)
    assert combine(1.0, [], alpha=0.7, agg=agg) <= combine(1.0, [0.0], alpha=0.7, agg=agg) + 1e-12


def test_validation_lists_valid_names():
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
            combine(1.0, SCORES, alpha=bad)
    with pytest.raises(ValueError, match="unknown step aggregator 'max'; valid: mean, min, last, product"):
        aggregate_steps(SCORES, "max")
