r"""Instruction templates, one per task family.

Every stage (synthesis, SFT, RL, evaluation) builds its prompt through a
:class:`~openrft.tasks.base.Task`, and the tasks take their wording from here, so the
template a model is trained on is the one it is evaluated on. All templates ask for the
final answer in ``\boxed{}`` (the form the extractors look for first) and the reference
replies end with the same ``The answer is \boxed{..}.`` line.
"""

from __future__ import annotations

from collections.abc import Sequence

from openrft.data.sample import LETTERS

MCQ_INSTRUCTION = (
    "Given a question and its options, please select the right answer. "
    "Think step by step, then give your final answer as the option letter in \\boxed{}, "
    "e.g. \\boxed{A}."
)
NUMERIC_INSTRUCTION = "Solve the problem step by step, then give the final numeric answer in \\boxed{}."
TEXT_INSTRUCTION = (
    "Answer the question. Think step by step, then give your final answer, "
    "as short as possible, in \\boxed{}."
)
FINAL_ANSWER = "The answer is \\boxed{{{answer}}}."
OPTION_LINE = "{label}. {text}"


def render_options(choices: Sequence[str]) -> str:
    """Option lines ``A. text``, one per choice, in label order.

    >>> print(render_options(["3", "6"]))
    A. 3
    B. 6
    """
    return "\n".join(OPTION_LINE.format(label=LETTERS[i], text=str(c).strip()) for i, c in enumerate(choices))


def render_reply(answer: str, rationale: str | None = None) -> str:
    r"""A reference reply: the rationale (if any), then the boxed final answer.

    >>> render_reply("B")
    'The answer is \\boxed{B}.'
    >>> print(render_reply("18", "9 eggs at $2 each."))
    9 eggs at $2 each.
    The answer is \boxed{18}.
    """
    final = FINAL_ANSWER.format(answer=answer)
    rationale = (rationale or "").strip()
    return f"{rationale}\n{final}" if rationale else final
