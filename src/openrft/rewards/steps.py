"""Splitting a completion into reasoning steps, by a named rule.

Process rewards score steps; dense rewards place each step's score at the step's last
token, so every step keeps its character span in the completion.

>>> [s.text for s in split_steps("Step 1: add.\\nStep 2: so 5.", "step_k")]
['Step 1: add.', 'Step 2: so 5.']
>>> [(s.start, s.end) for s in split_steps("a\\n\\nb", "newline")]
[(0, 1), (3, 4)]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Step", "STEP_RULES", "split_steps", "step_rule"]


@dataclass(frozen=True)
class Step:
    """One step: its text (stripped) and its character span ``[start, end)`` in the completion."""

    text: str
    start: int
    end: int


def _spans(text: str, pattern: re.Pattern[str]) -> list[Step]:
    """Pieces of ``text`` between matches of ``pattern`` (separator excluded), stripped, empty ones dropped."""
    steps: list[Step] = []
    pos = 0
    bounds = [(m.start(), m.end()) for m in pattern.finditer(text)] + [(len(text), len(text))]
    for sep_start, sep_end in bounds:
        piece = text[pos:sep_start]
        stripped = piece.strip()
        if stripped:
            start = pos + (len(piece) - len(piece.lstrip()))
            steps.append(Step(stripped, start, start + len(stripped)))
        pos = sep_end
    return steps


def _starts(text: str, pattern: re.Pattern[str]) -> list[Step]:
    """Pieces of ``text`` that each begin at a match of ``pattern`` (text before the first match is a step too)."""
    cuts = sorted({0, *(m.start() for m in pattern.finditer(text))})
    steps: list[Step] = []
    for a, b in zip(cuts, cuts[1:] + [len(text)]):
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            start = a + (len(piece) - len(piece.lstrip()))
            steps.append(Step(stripped, start, start + len(stripped)))
    return steps


_NEWLINE = re.compile(r"\n")
_BLANK = re.compile(r"\n[ \t]*\n")
_STEP_K = re.compile(r"(?im)^[ \t]*(?:#+[ \t]*)?\**step[ \t]*\d+\**[ \t]*[:.)]")

STEP_RULES: dict[str, Callable[[str], list[Step]]] = {
    "newline": lambda t: _spans(t, _NEWLINE),
    "blank_line": lambda t: _spans(t, _BLANK),
    "step_k": lambda t: _starts(t, _STEP_K),
}


def step_rule(rule: str) -> Callable[[str], list[Step]]:
    """The splitter for ``rule``: a name in :data:`STEP_RULES` or ``re:<pattern>`` (a separator regex)."""
    if rule.startswith("re:"):
        try:
            pattern = re.compile(rule[3:])
        except re.error as exc:
            raise ValueError(f"step rule {rule!r}: invalid regular expression ({exc})") from None
        return lambda t: _spans(t, pattern)
    try:
        return STEP_RULES[rule]
    except KeyError:
        raise ValueError(f"unknown step rule {rule!r}; use one of {', '.join(STEP_RULES)} or 're:<separator regex>'") from None


def split_steps(text: str, rule: str = "newline") -> list[Step]:
    """Split ``text`` into steps by ``rule``; an empty or blank completion has no steps (``[]``)."""
    return step_rule(rule)(text)
