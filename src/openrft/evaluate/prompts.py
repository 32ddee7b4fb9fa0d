"""Evaluation prompts checked against the model before anything is generated.

The data loaders already left out questions that cannot fit by their length in characters
(:mod:`openrft.data.lengths`); here the exact prompts (few-shot examples and chat template included) are counted in
the model's own tokens, so an evaluation never stops on one item after the others were generated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from openrft.data.lengths import report_long
from openrft.data.sample import Sample
from openrft.models.backends.base import Generator, Prompt

__all__ = ["fit_prompts"]


def fit_prompts(generator: Generator, samples: Sequence[Sample], prompts: Mapping[str, Prompt],
                long_questions: str = "skip") -> list[Sample]:
    """``samples`` whose evaluation prompt (``prompts[sample.id]``, few-shot examples included) the generator's
    model can take; the others are skipped with a warning naming each (``long_questions="skip"``) or refused with
    a :class:`~openrft.data.sample.DataError` (``"error"``)."""
    too_long = getattr(generator, "too_long", None)  # duck-typed generators cannot tell
    if too_long is None:
        return list(samples)
    long = too_long([prompts[s.id] for s in samples])
    report_long([(samples[i].id, why) for i, why in sorted(long.items())], long_questions,
                "the model's context (prompt with its few-shot examples)")
    return [s for i, s in enumerate(samples) if i not in long]
