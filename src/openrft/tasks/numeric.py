"""Numeric task: the answer is a number, graded with a relative and an absolute tolerance."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import ClassVar

from openrft.data.sample import DataError, Sample
from openrft.tasks.base import Task, gold_rationale, register_task
from openrft.tasks.extract import (ABS_TOL, REL_TOL, extract_number, format_number, numbers_close, parse_number,
                                   sample_tolerances)
from openrft.tasks.prompts import NUMERIC_INSTRUCTION, render_reply


@register_task("numeric")
class NumericTask(Task):
    r"""Free-form problem with a numeric answer (see :func:`~openrft.tasks.extract.extract_number`).

    ``rel_tol``/``abs_tol`` default to :data:`~openrft.tasks.extract.REL_TOL` (1e-6) and
    :data:`~openrft.tasks.extract.ABS_TOL` (0); two integers always compare exactly.

    >>> s = Sample(id="q", task="gsm8k", question="9 eggs at $2?", answer="18", answer_type="numeric",
    ...            meta={"rationale": "9 * 2 = 18\n#### 18"})
    >>> t = NumericTask()
    >>> print(t.render_answer(s))
    9 * 2 = 18
    The answer is \boxed{18}.
    >>> t.grade("She makes $18.00 a day.", s), t.grade("17 or 18", s)
    (Grade(extracted='18', correct=True), Grade(extracted=None, correct=False))
    >>> NumericTask(rel_tol=0.01).grade(r"\boxed{18.1}", s).correct
    True
    """

    name: ClassVar[str] = "numeric"
    answer_type: ClassVar[str] = "numeric"
    instruction: ClassVar[str] = NUMERIC_INSTRUCTION

    def __init__(self, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> None:
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol

    def render_question(self, sample: Sample) -> str:
        return sample.question.strip()

    def render_answer(self, sample: Sample) -> str:
        rationale = re.sub(r"\s*####[^\n]*\s*$", "", gold_rationale(sample) or "")
        return render_reply(format_number(self._gold(sample)), rationale)

    def extract(self, completion: str, sample: Sample) -> str | None:
        return extract_number(completion)

    def is_equivalent(self, extracted: str, sample: Sample) -> bool:
        """Whether ``extracted`` equals the gold number within the tolerances.

        >>> s = Sample(id="q", task="t", question="?", answer="1,234.5", answer_type="numeric")
        >>> NumericTask().is_equivalent("1234.50", s), NumericTask().is_equivalent("1234", s)
        (True, False)
        """
        rel_tol, abs_tol = sample_tolerances(sample.meta, self.rel_tol, self.abs_tol)
        return numbers_close(extracted, self._gold(sample), rel_tol=rel_tol, abs_tol=abs_tol)

    @staticmethod
    def _gold(sample: Sample) -> Fraction:
        gold = parse_number(sample.answer)
        if gold is None:
            raise DataError(
                f"sample {sample.id!r}: field 'answer' = {sample.answer!r} is not one number; "
                "numeric samples need a number such as '18', '-0.75', '3/4' or '1.5e3'"
            )
        return gold
