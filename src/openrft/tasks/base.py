"""Task = prompt template + answer extraction + grader.

A task owns its prompt and its grader; rewards call the same grader that evaluation
calls, so training and evaluation cannot drift. Every stage (synthesis, SFT, RL,
evaluation) builds its chat messages through :meth:`Task.messages`, with or without
few-shot examples, the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from openrft.data.sample import Sample

Message = dict[str, str]

#: ``meta`` fields a dataset may carry a worked solution in (GSM8K: ``rationale``)
RATIONALE_KEYS = ("rationale", "solution", "explanation", "cot")
#: ``meta`` field of a grader-verified trace attached to a training sample (a synthesized correct
#: solution); few-shot examples show it when the dataset ships no worked solution of its own
TRACE_KEY = "verified_trace"


def gold_rationale(sample: Sample) -> str | None:
    """The worked solution a dataset ships with ``sample`` (GSM8K's rationale, SVAMP's equation), or None.

    >>> gold_rationale(Sample(id="1", task="svamp", question="?", answer="51", answer_type="numeric",
    ...                       meta={"equation": "( 76.0 - 25.0 )"}))
    '( 76.0 - 25.0 ) = 51'
    """
    meta = sample.meta if isinstance(sample.meta, dict) else {}
    for key in RATIONALE_KEYS:
        text = meta.get(key)
        if isinstance(text, str) and text.strip():
            return text.strip()
    equation = meta.get("equation")
    if isinstance(equation, str) and equation.strip():
        return f"{equation.strip()} = {sample.answer}"
    return None


def without_rationale(sample: Sample) -> Sample:
    """``sample`` with its worked solutions removed from ``meta`` (so the reference reply is the bare answer)."""
    drop = {*RATIONALE_KEYS, "equation", TRACE_KEY}
    return sample.replace(meta={k: v for k, v in sample.meta.items() if k not in drop})


@dataclass(frozen=True)
class Grade:
    """Verdict on one completion: the answer extracted (``None`` = no answer) and whether it is right."""

    extracted: str | None
    correct: bool

    @property
    def score(self) -> float:
        return 1.0 if self.correct else 0.0


class Task(ABC):
    """Prompt + extraction + grading for one answer type.

    Subclasses set ``name`` and ``answer_type`` and implement :meth:`render_question`,
    :meth:`render_answer`, :meth:`extract` and :meth:`is_equivalent`.
    """

    name: ClassVar[str]
    answer_type: ClassVar[str]
    instruction: ClassVar[str]

    # ---- prompt ---------------------------------------------------------------
    @abstractmethod
    def render_question(self, sample: Sample) -> str:
        """The user-visible problem text (question, and options when there are any)."""

    @abstractmethod
    def render_answer(self, sample: Sample) -> str:
        """The reference assistant reply for ``sample``: the dataset's worked solution (:func:`gold_rationale`)
        when it ships one, then the final-answer line; the bare answer line otherwise. Synthesis falls back
        to it for a question it could not solve."""

    def has_reference_solution(self, sample: Sample) -> bool:
        """Whether :meth:`render_answer` shows worked steps (the dataset's own), not only the answer."""
        return gold_rationale(sample) is not None

    def render_example(self, sample: Sample) -> str:
        r"""The assistant turn of a few-shot example: worked steps whenever any are known.

        The dataset's own solution first (:meth:`render_answer`), else a verified trace attached to the
        sample (``meta["verified_trace"]``, e.g. the correct trace synthesis found for it), else the bare
        answer. A small model copies what its examples show, so bare-answer shots teach it to answer
        without working.

        >>> from openrft.tasks import get_task
        >>> s = Sample(id="q", task="t", question="2+3?", answer="5", answer_type="numeric",
        ...            meta={TRACE_KEY: "2 + 3 = 5. The answer is \\boxed{5}."})
        >>> t = get_task("numeric")
        >>> t.render_example(s), t.render_example(without_rationale(s))
        ('2 + 3 = 5. The answer is \\boxed{5}.', 'The answer is \\boxed{5}.')
        """
        if not self.has_reference_solution(sample):
            trace = sample.meta.get(TRACE_KEY)
            if isinstance(trace, str) and trace.strip():
                return trace.strip()
        return self.render_answer(sample)

    def user_prompt(self, sample: Sample) -> str:
        return f"{self.instruction}\n\n{self.render_question(sample)}"

    def messages(self, sample: Sample, examples: Sequence[Sample] = ()) -> list[Message]:
        """Chat messages for ``sample``; ``examples`` are few-shot Q/A pairs placed before it as earlier turns
        (their replies: :meth:`render_example`)."""
        msgs: list[Message] = []
        for ex in examples:
            msgs.append({"role": "user", "content": self.user_prompt(ex)})
            msgs.append({"role": "assistant", "content": self.render_example(ex)})
        msgs.append({"role": "user", "content": self.user_prompt(sample)})
        return msgs

    # ---- grading --------------------------------------------------------------
    @abstractmethod
    def extract(self, completion: str, sample: Sample) -> str | None:
        """The final answer stated in ``completion`` in canonical form, or ``None`` when it states none."""

    @abstractmethod
    def is_equivalent(self, extracted: str, sample: Sample) -> bool:
        """Whether a canonical extracted answer matches the gold answer of ``sample``."""

    def grade(self, completion: str, sample: Sample) -> Grade:
        extracted = self.extract(completion, sample)
        return Grade(extracted, extracted is not None and self.is_equivalent(extracted, sample))

    def grade_batch(self, completions: Sequence[str], samples: Sequence[Sample]) -> list[Grade]:
        """Grades of ``completions[i]`` against ``samples[i]``. A task whose grader pays per call (a program
        task's sandbox) overrides this to grade the whole batch at once; everything that grades many replies
        goes through it (:func:`grade_all`)."""
        if len(completions) != len(samples):
            raise ValueError(f"{len(completions)} completions for {len(samples)} samples")
        return [self.grade(c, s) for c, s in zip(completions, samples)]


_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def deco(cls: type[Task]) -> type[Task]:
        _REGISTRY[name] = cls
        return cls

    return deco


def task_names() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name_or_type: str, **kwargs) -> Task:
    """A task by registry name (``mcq``, ``numeric``, ``text``, ``program``) or dotted import path ``pkg.mod:Class``."""
    if ":" in name_or_type:
        import importlib

        mod, _, attr = name_or_type.partition(":")
        return getattr(importlib.import_module(mod), attr)(**kwargs)
    try:
        factory = _REGISTRY[name_or_type]
    except KeyError:
        raise ValueError(
            f"unknown task type {name_or_type!r}; valid: {', '.join(task_names())} "
            "or a dotted path 'package.module:Class'"
        ) from None
    return factory(**kwargs)


def grade_all(samples: Sequence[Sample], completions: Sequence[str],
              tasks: Mapping[str, Task] | None = None) -> list[Grade]:
    """``Grade`` of ``completions[i]`` against ``samples[i]``: what rewards, synthesis, labelling and evaluation
    all call to grade many replies.

    One task per answer type (``tasks`` if given, else :func:`task_for`; a ``dict`` caller's cache is
    filled in place), one :meth:`Task.grade_batch` call per task. Empty completions are wrong without
    reaching the grader.

    >>> s = Sample(id="q", task="t", question="2+3?", answer="5", answer_type="numeric")
    >>> [g.correct for g in grade_all([s, s, s], ["So \\boxed{5}.", "So 6.", "  "])]
    [True, False, False]
    """
    if len(samples) != len(completions):
        raise ValueError(f"{len(completions)} completions for {len(samples)} samples")
    tasks = tasks if isinstance(tasks, dict) else dict(tasks or {})
    grades: list[Grade | None] = [None] * len(completions)
    groups: dict[str, list[int]] = {}
    for i, (sample, text) in enumerate(zip(samples, completions)):
        if not isinstance(text, str):
            raise TypeError(f"completion {i} is a {type(text).__name__}, expected str")
        if not text.strip():
            grades[i] = Grade(None, False)
        else:
            groups.setdefault(sample.answer_type, []).append(i)
    for answer_type, idx in groups.items():
        task = tasks.get(answer_type) or tasks.setdefault(answer_type, task_for(samples[idx[0]]))
        for i, g in zip(idx, task.grade_batch([completions[i] for i in idx], [samples[i] for i in idx]),
                        strict=True):
            grades[i] = g
    return grades  # type: ignore[return-value]


def task_for(sample: Sample, **kwargs) -> Task:
    return get_task(sample.answer_type, **kwargs)
