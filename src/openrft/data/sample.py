"""The one record type every stage reads and writes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

AnswerType = Literal["mcq", "numeric", "text", "program"]
ANSWER_TYPES: tuple[str, ...] = ("mcq", "numeric", "text", "program")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class DataError(ValueError):
    """Bad input data; the message names the file, line and field at fault."""


@dataclass(frozen=True)
class Sample:
    """One (question, answer) record.

    ``choices`` holds the option texts of a multiple-choice question in label order
    (A, B, C, ...); ``answer`` is then the gold letter. For numeric tasks ``answer`` is
    the number as a string, for text tasks the reference text. ``meta`` keeps anything
    else (source fields, rationale, provenance of augmented samples).

    >>> s = Sample(id="q1", task="demo", question="2+2?", choices=("3", "4"), answer="b", answer_type="mcq")
    >>> s.answer, s.gold_index
    ('B', 1)
    """

    id: str
    task: str
    question: str
    answer: str
    answer_type: AnswerType = "text"
    choices: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise DataError(f"sample {self.id!r}: field 'question' is missing or empty")
        if self.answer is None or str(self.answer).strip() == "":
            raise DataError(f"sample {self.id!r}: field 'answer' is missing or empty")
        if self.answer_type not in ANSWER_TYPES:
            raise DataError(
                f"sample {self.id!r}: unknown answer_type {self.answer_type!r}; "
                f"valid: {', '.join(ANSWER_TYPES)}"
            )
        object.__setattr__(self, "answer", str(self.answer).strip())
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(str(c) for c in self.choices))
        if self.answer_type == "mcq":
            if not self.choices:
                raise DataError(f"sample {self.id!r}: multiple-choice sample with empty 'choices'")
            if len(self.choices) > len(LETTERS):
                raise DataError(f"sample {self.id!r}: {len(self.choices)} choices, at most 26 supported")
            letter = self.answer.upper().strip("() .")
            valid = LETTERS[: len(self.choices)]
            if len(letter) != 1 or letter not in valid:
                raise DataError(
                    f"sample {self.id!r}: gold answer {self.answer!r} is not among the choice "
                    f"letters {', '.join(valid)}"
                )
            object.__setattr__(self, "answer", letter)

    @property
    def labels(self) -> tuple[str, ...]:
        """Choice letters, ``('A', 'B', ...)``; empty when not multiple choice."""
        return tuple(LETTERS[: len(self.choices or ())])

    @property
    def gold_index(self) -> int | None:
        return LETTERS.index(self.answer) if self.answer_type == "mcq" else None

    def replace(self, **changes: Any) -> "Sample":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["choices"] = list(self.choices) if self.choices is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Sample":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DataError(f"unknown Sample fields {sorted(unknown)}; valid: {sorted(known)}")
        missing = {"id", "task", "question", "answer"} - set(d)
        if missing:
            raise DataError(f"record lacks Sample field(s) {sorted(missing)}")
        return cls(**d)
