"""Multiple-choice task: options as ``A. text`` lines, graded on the option letter."""

from __future__ import annotations

from typing import ClassVar

from openrft.data.sample import DataError, Sample
from openrft.tasks.base import Task, register_task
from openrft.tasks.extract import extract_letter
from openrft.tasks.prompts import MCQ_INSTRUCTION, render_options, render_reply


@register_task("mcq")
class MCQTask(Task):
    r"""Prompt with lettered options; the answer is the letter (see :func:`~openrft.tasks.extract.extract_letter`).

    >>> s = Sample(id="q", task="chem", question="2+2?", choices=("3", "4"), answer="B", answer_type="mcq")
    >>> t = MCQTask()
    >>> print(t.render_question(s))
    2+2?
    <BLANKLINE>
    A. 3
    B. 4
    >>> t.render_answer(s)
    'The answer is \\boxed{B}.'
    >>> t.grade("4 is right, so the answer is (b).", s), t.grade("A. 3\nB. 4", s)
    (Grade(extracted='B', correct=True), Grade(extracted=None, correct=False))
    """

    name: ClassVar[str] = "mcq"
    answer_type: ClassVar[str] = "mcq"
    instruction: ClassVar[str] = MCQ_INSTRUCTION

    def render_question(self, sample: Sample) -> str:
        if not sample.choices:
            raise DataError(f"sample {sample.id!r}: the mcq task needs 'choices'")
        return f"{sample.question.strip()}\n\n{render_options(sample.choices)}"

    def render_answer(self, sample: Sample) -> str:
        return render_reply(sample.answer, sample.meta.get("rationale"))

    def extract(self, completion: str, sample: Sample) -> str | None:
        return extract_letter(completion, sample.choices)

    def is_equivalent(self, extracted: str, sample: Sample) -> bool:
        """Same letter as the gold answer, case-insensitively.

        >>> s = Sample(id="q", task="t", question="?", choices=("x", "y"), answer="A", answer_type="mcq")
        >>> MCQTask().is_equivalent("a", s), MCQTask().is_equivalent("B", s)
        (True, False)
        """
        return extracted.strip().upper() == sample.answer
