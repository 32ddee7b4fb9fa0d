r"""Multiple-choice task: options as ``A. text`` lines, graded on the option letter.

:func:`extract_letter` reads the letter a completion gives as its final answer; it builds on
the shared helpers of :mod:`openrft.tasks.extract` (boxes, LaTeX clean-up, answer phrases).
Small models rarely box their answer and often echo the option list back, so besides explicit
answers it accepts a line that stands as an answer, and rejects echoes and hedges.
"""

from __future__ import annotations

import functools
import re
from typing import ClassVar

from openrft.data.sample import LETTERS, DataError, Sample
from openrft.tasks.base import Task, gold_rationale, register_task
from openrft.tasks.extract import clean_latex, find_boxed, strip_markup
from openrft.tasks.prompts import MCQ_INSTRUCTION, render_options, render_reply

Choices = tuple[str, ...] | list[str] | None

# ---- letter extraction (pure functions) ---------------------------------------------
_SPAN = 500  # characters read after an answer phrase
_NEXT_LINE = re.compile(r"\n\s*([^\n]{1,500})")
_HEDGE = "hedge"
_LETTER = r"(?<![A-Za-z0-9])(?:(?P<open>[(\[\"'])[ \t]*)?(?P<L>[A-Za-z])(?![A-Za-z0-9])(?:[ \t]*(?P<close>[)\]\"']))?"
_LETTER_AT = re.compile(rf"[ \t]*(?:(?:option|choice|answer)\s*:?\s*)?{_LETTER}", re.I)
_CHOICE_HEAD = re.compile(
    r"\b(?:final\s+answer|answer|(?:correct|right|best|final)\s+(?:option|choice|letter))\s*"
    r"(?:(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=|:|-(?=\s))\s*)+"
    r"(?:(?:therefore|thus|then|clearly|either|probably|likely|definitely|the|option|choice|letter)\b\s*:?\s*)*",
    re.I,
)
_IS_CORRECT = re.compile(
    rf"(?:\b(?:option|choice)\s*)?{_LETTER}\s*(?:is|would\s+be|must\s+be|seems\s+to\s+be|appears\s+to\s+be)\s+"
    r"(?:the\s+)?(?:correct|right|best|true|answer)\b",
    re.I,
)
_I_CHOOSE = re.compile(
    r"\b(?:(?:I(?:\s*'d|\s*'ll|\s+would|\s+will|\s+shall)?|let'?s|let\s+us|we)\s+"
    r"(?:choose|select|pick|go\s+with|opt\s+for)|I\s+(?:think|believe)\s+(?:that\s+)?(?:it'?s|it\s+is))\s+"
    r"(?:(?:the\s+)?(?:option|choice|answer|letter)\s*)?",
    re.I,
)
_LETTER_END = re.compile(r"[ \t]*(?:$|[\n.,;:!?)\]}\-—])")
_NEXT_WORD = re.compile(r"[ \t]*([A-Za-z]+)")
_LINK_WORDS = frozenset("because since as which with for due given from according is would".split())
_BARE_LINE = re.compile(r"(?:(?:so|therefore|thus|hence|option|choice)\W+)*[(\[]?[ \t]*([A-Za-z])[ \t]*[)\]]?[ \t]*[.:]?", re.I)
_TEXT_LINE = re.compile(r"[(\[]?[ \t]*([A-Za-z])[ \t]*(?:[)\]]|\.)[ \t]*(\S.*)")


def _letter_stands(text: str, m: re.Match[str], labels: str) -> bool:
    """Whether a matched letter token is an answer, not an article ("A reaction") or a word."""
    letter = m["L"]
    if letter.upper() not in labels:
        return False
    if m["open"] or m["close"] or _LETTER_END.match(text, m.end()):
        return True
    word = _NEXT_WORD.match(text, m.end())
    return bool(word) and (word[1].lower() in _LINK_WORDS or (letter.isupper() and letter not in "AI"))


def _hedged(text: str, start: int, end: int, labels: str) -> bool:
    """Whether the letter at ``text[start:end]`` is joined to another letter by or/and/a comma."""
    letter = text[start:end].upper()
    tok = rf"(?<![A-Za-z0-9])(?i:(?:option|choice)\s+)?(?:[(\[\"']?(?P<L>[{labels}])|\((?P<l>[{labels.lower()}])\))(?![A-Za-z0-9])"
    conj = r"[ \t]*(?:,|/|&|(?i:\bor\b|\band\b|\bnor\b))[ \t]*"
    after = re.match(rf"[)\]\"']?{conj}{tok}", text[end : end + 40])
    before = re.search(rf"{tok}[)\]\"']?{conj}(?i:(?:option|choice)\s+)?[(\[\"']?[ \t]*$", text[max(0, start - 40) : start])
    return any(m and (m["L"] or m["l"]).upper() != letter for m in (after, before))


@functools.lru_cache(maxsize=4096)
def _option_key(s: str) -> str:
    return " ".join(strip_markup(clean_latex(s)).lower().split())


def match_option(answer: str, choices: Choices) -> str | None:
    """Letter of the one option whose text equals ``answer`` (case/space/markup-insensitive).

    >>> match_option("**-3.2 L  atm.**", ["-3.2 L atm", "+3.2 L atm"]), match_option("6", ["6", "6"])
    ('A', None)
    """
    key = _option_key(answer)
    hits = [i for i, c in enumerate(choices or ()) if _option_key(c) == key]
    return LETTERS[hits[0]] if key and len(hits) == 1 else None


def _agrees(letter: str, rest: str, labels: str, choices: Choices) -> bool:
    """False when the text after ``B.`` is another option's text or holds another label (``(C) ..``)."""
    if any(x != letter.upper() for x in re.findall(rf"(?:^|\s)[(\[]?([{labels}])[)\].:](?=\s)", rest)):
        return False
    other = match_option(rest.lstrip(" \t.):-"), choices) if choices else None
    return other is None or other == letter.upper()


def _choice_from_span(s: str, labels: str, choices: Choices) -> str | None:
    m = _LETTER_AT.match(s)
    if m and _letter_stands(s, m, labels):
        if _hedged(s, m.start("L"), m.end("L"), labels):
            return _HEDGE
        return m["L"].upper() if _agrees(m["L"], s[m.end() :], labels, choices) else None
    return match_option(s, choices)


def _line_choice(line: str, labels: str, choices: Choices) -> tuple[str, str, bool] | None:
    """``(form, letter, stands)`` of an option-like line: ``B`` (bare), ``B. text`` (text) or an option's text.

    A lettered line stands as an answer only when its text is (part of) that option's text.
    """
    head = _CHOICE_HEAD.search(line)  # "The answer is B. 6" reads as "B. 6"
    line = line[head.end() :] if head else line
    for form, pattern in (("bare", _BARE_LINE), ("text", _TEXT_LINE)):
        m = pattern.fullmatch(line)
        if m and m[1].upper() in labels:
            letter = m[1].upper()
            if form == "bare" or not choices:
                return form, letter, True
            key, own = _option_key(m[2]), _option_key(choices[LETTERS.index(letter)])
            return form, letter, _agrees(letter, m[2], labels, choices) and (key in own or own in key)
    letter = match_option(line, choices)
    return ("option", letter, True) if letter else None


def _line_answer(text: str, labels: str, choices: Choices) -> tuple[int, str] | None:
    """``(offset, letter)`` of the last line, or else the first, standing as an answer; else ``None``.

    Not when the text ends in a question, nor when the line is one of an echoed option list.
    """
    spans = [(m.start(), m[0].strip()) for m in re.finditer(r"[^\n]+", text) if m[0].strip()]
    if not spans or spans[-1][1].endswith("?"):
        return None
    kinds = [_line_choice(line, labels, choices) for _, line in spans]
    for i in dict.fromkeys((len(spans) - 1, 0)):
        kind = kinds[i]
        if kind is None or not kind[2]:
            continue
        form, letter, _ = kind
        # a bare "B" may follow an echoed "A. ..", "B. .." list; a lettered or option-text line may not
        if not any(k and k[1] != letter and (form != "bare" or k[0] == "bare") for j, k in enumerate(kinds) if j != i):
            return spans[i][0], letter
    return None


def extract_letter(text: str, choices: Choices = None, labels: str | None = None) -> str | None:
    r"""The option letter a completion gives as its final answer, upper case, or ``None``.

    ``labels`` defaults to one letter per choice (``"ABCD"`` without choices). Statements
    are read in text order and the last one wins: boxes, "answer is X" (or an option's text
    after it), "X is correct", "I choose X", hedges ("A or C"), and a line standing as an
    answer -- the last line, or else the first (answer first, then an explanation) -- that
    is a bare letter, ``B. <text of B>`` or an option's text. A hedge, an echoed option list,
    a lettered line carrying another option's text, or a restated question gives ``None``.

    >>> extract_letter(r"... so \boxed{\text{(b)}}"), extract_letter("**Answer:** C"), extract_letter("b")
    ('B', 'C', 'B')
    >>> extract_letter("The answer is B. Wait, no: the correct answer is option D.")
    'D'
    >>> extract_letter("The answer is 6 moles.", choices=["3 moles", "6 moles"])
    'B'
    >>> extract_letter("A. 3\nB. 6\nC. 9\nD. 12"), extract_letter("Either B or C."), extract_letter("A reaction.")
    (None, None, None)
    >>> extract_letter("A. 3\nB. 6\nC. 9\nD. 12\nThe answer is C")
    'C'
    """
    labels = labels or (LETTERS[: len(choices)] if choices else "ABCD")
    text = re.sub(r"[*`$]", "", clean_latex(text))
    candidates = [(b.pos, _HEDGE if b.joined else _choice_from_span(b.content, labels, choices)) for b in find_boxed(text)]
    for m in _CHOICE_HEAD.finditer(text):
        line = text[m.end() : m.end() + _SPAN].split("\n", 1)[0]
        letter = _choice_from_span(line, labels, choices)
        nxt = _NEXT_LINE.match(text, m.end() + len(line)) if letter not in (None, _HEDGE) else None
        listed = _line_choice(nxt[1].strip(), labels, choices) if nxt else None
        # "The answer is:\nA. ..\nB. .." or "The answer is A. ..\nB. ..": the option list, echoed
        if listed and listed[1] != letter and ("\n" in m[0] or ord(listed[1]) == ord(letter) + 1):
            letter = _HEDGE
        if letter is not None:
            candidates.append((m.start(), letter))
    for m in _IS_CORRECT.finditer(text):
        if m["L"].upper() in labels and (m["L"].isupper() or m["open"]):
            hedge = _hedged(text, m.start(), m.end("L"), labels)
            candidates.append((m.start(), _HEDGE if hedge else m["L"].upper()))
    for m in _I_CHOOSE.finditer(text):
        lm = _LETTER_AT.match(text, m.end())
        if lm and _letter_stands(text, lm, labels):
            candidates.append((m.start(), _HEDGE if _hedged(text, lm.start("L"), lm.end("L"), labels) else lm["L"].upper()))
    for m in re.finditer(rf"(?<![A-Za-z0-9])[(\[]?([{labels}])[)\]]?\s+or\s+(?:option\s+)?[(\[]?([{labels}])(?![A-Za-z0-9])", text):
        if m[1] != m[2]:  # "A or C" anywhere is a hedge; a later answer still wins
            candidates.append((m.start(), _HEDGE))
    line_answer = _line_answer(text, labels, choices)
    if line_answer:
        candidates.append(line_answer)
    result = max(candidates, key=lambda c: c[0])[1] if candidates else None
    return None if result in (None, _HEDGE) else result


@register_task("mcq")
class MCQTask(Task):
    r"""Prompt with lettered options; the answer is the letter (see :func:`extract_letter`).

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
        return render_reply(sample.answer, gold_rationale(sample))

    def extract(self, completion: str, sample: Sample) -> str | None:
        return extract_letter(completion, sample.choices)

    def is_equivalent(self, extracted: str, sample: Sample) -> bool:
        """Same letter as the gold answer, case-insensitively.

        >>> s = Sample(id="q", task="t", question="?", choices=("x", "y"), answer="A", answer_type="mcq")
        >>> MCQTask().is_equivalent("a", s), MCQTask().is_equivalent("B", s)
        (True, False)
        """
        return extracted.strip().upper() == sample.answer
