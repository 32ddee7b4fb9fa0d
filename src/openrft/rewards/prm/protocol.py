"""The remote scoring protocol, client side, in the standard library only: how requests are batched and replies read.

``POST <url>`` with ``{"items": [{"question": str, "steps": [str, ...]}, ...]}``; the reply is
``{"scores": [[float, ...], ...]}``, one list per item and one score in [0, 1] per step. Completions
without steps are not sent. Both HTTP clients speak it through these functions: the httpx one of
:mod:`openrft.rewards.prm.remote` and the standard-library one that exported rewards carry
(:mod:`openrft.export.prm_client`).

>>> sent = []
>>> def post(body, steps):
...     sent.append(len(body["items"]))
...     return [[0.5] * len(st) for st in steps]
>>> score_in_requests(["q1", "q2", "q3"], [["a", "b"], [], ["c"]], 1, post), sent
([[0.5, 0.5], [], [0.5]], [1, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from openrft.rewards.prm.base import check_scores

__all__ = ["parse_scores", "score_in_requests"]

#: ``post(body, steps sent) -> one score list per item``: one request (with its retries)
Post = Callable[[dict[str, Any], list[list[str]]], list[list[float]]]


def parse_scores(data: Any, steps: Sequence[Sequence[str]], url: str) -> list[list[float]]:
    """The ``scores`` of a reply body, checked against the steps sent (``ValueError`` naming what is wrong)."""
    if not isinstance(data, dict) or "scores" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"reply from {url} has no 'scores' list (got {keys})")
    scores = data["scores"]
    if not isinstance(scores, list) or len(scores) != len(steps):
        n = len(scores) if isinstance(scores, list) else type(scores).__name__
        raise ValueError(f"reply from {url} has {n} score lists for {len(steps)} items")
    out = []
    for i, (sc, st) in enumerate(zip(scores, steps)):
        if not isinstance(sc, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in sc):
            raise ValueError(f"reply from {url}: scores of item {i} are not a list of numbers: {str(sc)[:200]}")
        vals = check_scores(sc, len(st), f"{url} (item {i})")
        bad = [k for k, x in enumerate(vals) if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"reply from {url}: item {i} has scores outside [0, 1] at step(s) {bad}")
        out.append(vals)
    return out


def score_in_requests(questions: Sequence[str], steps: Sequence[Sequence[str]], batch_size: int,
                      post: Post) -> list[list[float]]:
    """Scores of every solution: those with steps sent ``batch_size`` per request through ``post``."""
    if len(questions) != len(steps):
        raise ValueError(f"{len(questions)} questions for {len(steps)} step lists")
    out: list[list[float]] = [[] for _ in steps]
    todo = [i for i, st in enumerate(steps) if len(st)]
    for b in range(0, len(todo), batch_size):
        idx = todo[b: b + batch_size]
        items = [{"question": str(questions[i]), "steps": [str(s) for s in steps[i]]} for i in idx]
        for i, sc in zip(idx, post({"items": items}, [it["steps"] for it in items])):
            out[i] = sc
    return out
