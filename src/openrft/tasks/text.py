"""Short free-text task graded by SQuAD-style normalised exact match."""

from __future__ import annotations

from typing import ClassVar

from openrft.data.sample import Sample
from openrft.tasks.base import Task, gold_rationale, register_task
from openrft.tasks.extract import extract_text, texts_match
from openrft.tasks.prompts import TEXT_INSTRUCTION, render_reply


@register_task("text")
class TextTask(Task):
    r"""Short text answer (see :func:`~openrft.tasks.extract.extract_text`).

    The gold ``answer`` and any ``meta["aliases"]`` are accepted after normalisation (case,
    whitespace, punctuation and articles ignored).

    >>> s = Sample(id="q", task="geo", question="Capital of France?", answer="Paris", meta={"aliases": ["Paris, France"]})
    >>> t = TextTask()
    >>> t.render_answer(s)
    'The answer is \\boxed{Paris}.'
    >>> t.grade("The answer is: the paris.", s).correct, t.grade(r"\boxed{Paris, France}", s).correct
    (True, True)
    >>> t.grade("Lyon", s).correct
    False
    """

    name: ClassVar[str] = "text"
    answer_type: ClassVar[str] = "text"
    instruction: ClassVar[str] = TEXT_INSTRUCTION

    def render_question(self, sample: Sample) -> str:
        return sample.question.strip()

    def render_answer(self, sample: Sample) -> str:
        return render_reply(sample.answer, gold_rationale(sample))

    def extract(self, completion: str, sample: Sample) -> str | None:
        return extract_text(completion)

    def is_equivalent(self, extracted: str, sample: Sample) -> bool:
        """Normalised exact match against the answer or one of ``meta["aliases"]``.

        >>> s = Sample(id="q", task="t", question="?", answer="The Nile")
        >>> TextTask().is_equivalent("nile!", s), TextTask().is_equivalent("Amazon", s)
        (True, False)
        """
        golds = (sample.answer, *sample.meta.get("aliases", ()))
        return any(texts_match(extracted, str(g)) for g in golds)
