"""Questions too long for the model, found when the data loads, before any model does.

A prompt must fit the model's context window in tokens, and counting tokens needs the tokenizer. Counting characters
needs nothing: no tokenizer packs :data:`CHARS_PER_TOKEN` characters of text into one token on average, so a question
longer than that many characters per token of context cannot fit, whatever the tokenizer. The exact token count is
checked again when the prompts are built (``openrft.evaluate.prompts.fit_prompts``).

What happens to such a question is ``long_questions``: ``skip`` (the default: it is left out with a warning naming
it, and the run goes on; a long run never dies on one bad item after hours of work) or ``error`` (a
:class:`DataError` naming every such question, before anything runs).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from openrft.data.sample import DataError, Sample

__all__ = ["CHARS_PER_TOKEN", "LONG_QUESTIONS", "drop_long_questions", "max_question_chars", "question_chars",
           "report_long"]

logger = logging.getLogger(__name__)

LONG_QUESTIONS = ("skip", "error")
#: a generous bound on the characters of one token (ordinary text averages about 4)
CHARS_PER_TOKEN = 32
#: the context assumed when it cannot be read without loading the model (a hub id not cached, a remote server)
FALLBACK_CONTEXT = 131_072


def max_question_chars(context: int | None) -> int:
    """The most characters a question may have for a model with ``context`` tokens (None: not known).

    >>> max_question_chars(8192)
    262144
    """
    return CHARS_PER_TOKEN * (context or FALLBACK_CONTEXT)


def question_chars(sample: Sample) -> int:
    """The characters of a sample's question and options: what its prompt holds besides the fixed instructions."""
    return len(sample.question) + sum(len(c) for c in sample.choices or ())


def report_long(long: Sequence[tuple[str, str]], long_questions: str, what: str) -> None:
    """Skip (a warning) or refuse (a :class:`DataError`) the items ``long``: ``(id, why)`` pairs, ``what`` says of
    what they are too long for."""
    if long_questions not in LONG_QUESTIONS:
        raise ValueError(f"long_questions must be one of {', '.join(LONG_QUESTIONS)}, got {long_questions!r}")
    if not long:
        return
    shown = "; ".join(f"{item} ({why})" for item, why in long[:5]) + (f"; and {len(long) - 5} more" if len(long) > 5
                                                                         else "")
    if long_questions == "error":
        raise DataError(f"{len(long)} question(s) too long for {what}: {shown}; shorten or remove them, or skip "
                        "them (long_questions: skip, the default)")
    logger.warning("skipping %d question(s) too long for %s: %s", len(long), what, shown)


def drop_long_questions(samples: Sequence[Sample], context: int | None, long_questions: str = "skip") -> list[Sample]:
    """``samples`` without the questions longer than :func:`max_question_chars` for a model of ``context`` tokens:
    skipped with a warning naming each, or refused with a :class:`DataError` (``long_questions="error"``).

    >>> s = [Sample(id="a", task="t", question="2+2?", answer="4"), Sample(id="b", task="t", question="x" * 99,
    ...                                                                  answer="4")]
    >>> [x.id for x in drop_long_questions(s, context=3)]
    ['a']
    """
    limit = max_question_chars(context)
    long = [(s.id, f"{question_chars(s)} characters") for s in samples if question_chars(s) > limit]
    report_long(long, long_questions, f"a model context of {context or FALLBACK_CONTEXT} tokens (at most {limit} "
                                      "characters)")
    skipped = {item for item, _ in long}
    return [s for s in samples if s.id not in skipped]
