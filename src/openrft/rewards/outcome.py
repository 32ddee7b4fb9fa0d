"""Outcome reward through the task's own grader (the one evaluation uses).

ReFT's partial reward (arXiv 2401.08967, sec. 3): 1 for a correct answer, ``partial_credit``
(ReFT: 0.1) when an answer can be extracted but is wrong, 0 when none can. ReFT uses it on
numeric tasks; here it applies to every task whose grader extracts an answer (an MCQ letter,
a number, a text answer, a program's result), since all of them report ``extracted``.

>>> from openrft.data.sample import Sample
>>> s = Sample(id="q", task="t", question="2+3?", answer="5", answer_type="numeric")
>>> OutcomeReward(partial_credit=0.1)([s, s, s], ["So 5.", "So 6.", "I do not know."])
[1.0, 0.1, 0.0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from openrft.data.sample import Sample
from openrft.tasks import Task, grade_all

__all__ = ["OutcomeGrades", "OutcomeReward"]


@dataclass(frozen=True)
class OutcomeGrades:
    """Per-completion outcome: the reward, whether it is right, and the answer extracted (``None`` = none)."""

    rewards: list[float]
    correct: list[bool]
    extracted: list[str | None]


class OutcomeReward:
    """1.0 if correct, ``partial_credit`` if an answer was extracted but is wrong, else 0.0.

    Args:
        partial_credit: reward for a wrong but extractable answer, in [0, 1) (ReFT: 0.1).
        tasks: task per answer type (e.g. a ``NumericTask`` with other tolerances); the
            registry's default task otherwise.
    """

    def __init__(self, partial_credit: float = 0.0, tasks: Mapping[str, Task] | None = None):
        partial_credit = float(partial_credit)
        if not 0.0 <= partial_credit < 1.0:
            raise ValueError(f"partial_credit must be in [0, 1) (reward of a wrong but extracted answer), got {partial_credit}")
        self.partial_credit = partial_credit
        self.tasks: dict[str, Task] = dict(tasks or {})

    def grade(self, samples: Sequence[Sample], completions: Sequence[str]) -> OutcomeGrades:
        grades = grade_all(samples, completions, self.tasks)
        rewards = [1.0 if g.correct else (self.partial_credit if g.extracted is not None else 0.0) for g in grades]
        return OutcomeGrades(rewards, [g.correct for g in grades], [g.extracted for g in grades])

    def __call__(self, samples: Sequence[Sample], completions: Sequence[str]) -> list[float]:
        return self.grade(samples, completions).rewards
