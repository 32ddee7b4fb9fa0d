"""Generator wrappers for the synthesize tests (also imported by the kill -9 child process)."""

from __future__ import annotations

import time

from openrft.data.sample import Sample
from openrft.models.backends.base import Completion, Generator
from openrft.synthesize import round_seed


class Scripted(Generator):
    """Wraps a real generator and records every call; can replace chosen attempts, blank all, interrupt or slow down.

    ``inject`` maps a question (a substring of its prompt's last message) to ``{attempt: text}``
    (1-based attempt numbers over the whole run). The attempt of completion ``k`` in a call is
    worked out from the call's seed (which names the round) and ``sizes``, so the wrapper
    keeps no count of its own and behaves the same across an interrupted run and its resume.
    """

    name = "scripted"

    def __init__(self, inner, *, seed=0, sizes=(), inject=None, empty=False, fail_on=None, delay_s=0.0):
        self.inner = inner
        self.seed = seed
        self.sizes = list(sizes)
        self.inject = inject or {}
        self.empty = empty
        self.fail_on = fail_on
        self.delay_s = delay_s
        self.calls: list[dict] = []  # {"questions": [...], "n": n, "round": r}

    def _round(self, seed):
        return next(r for r in range(len(self.sizes) + 1) if round_seed(self.seed, r) == seed)

    def generate(self, prompts, params, progress=None):
        if self.fail_on is not None and len(self.calls) + 1 == self.fail_on:
            raise KeyboardInterrupt
        r = self._round(params.seed) if self.sizes else None
        questions = [p[-1]["content"] if not isinstance(p, str) else p for p in prompts]
        self.calls.append({"questions": questions, "n": params.n, "round": r})
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.empty:
            return [[Completion("" if k % 2 else "  \n", 0, "stop") for k in range(params.n)] for _ in prompts]
        outs = [list(row) for row in self.inner.generate(prompts, params, progress)]
        first = sum(self.sizes[:r]) + 1 if r is not None else 1
        for q, row in zip(questions, outs):
            for key, script in self.inject.items():
                if key in q:
                    for k in range(params.n):
                        if first + k in script:
                            row[k] = Completion(script[first + k], 7, "stop")
        return outs

    def asked(self, key):
        """Completions requested for the question whose prompt contains ``key``, per call."""
        return [c["n"] for c in self.calls for q in c["questions"] if key in q]


def key(i):
    """The part of question ``i``'s prompt that identifies it (``"item 1?"`` is not inside ``"item 10?"``)."""
    return f"item {i}?"


def numeric(i, answer, task="arith"):
    return Sample(id=f"num/{i}", task=task, question=f"What is the secret code of {key(i)}",
                  answer=str(answer), answer_type="numeric")
