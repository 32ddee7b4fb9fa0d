r"""Pure answer-extraction functions: strings in, canonical answers out.

The graders in :mod:`openrft.tasks.mcq`, :mod:`~openrft.tasks.numeric` and
:mod:`~openrft.tasks.text` compose these. Evidence is read in two tiers:

1. **explicit final answers**: ``\boxed{..}``, ``#### n`` and answer phrases ("The answer
   is C", "Answer: (b)", "C is correct", "I choose C"). The *last* one in the text wins, so
   a model that corrects itself is graded on its correction.
2. **a line that stands as an answer**: for numbers, the last number of the text when there
   is no explicit answer; for multiple choice, a bare letter or an option's text, read
   together with the explicit answers in text order (:func:`openrft.tasks.mcq.extract_letter`).

A hedge ("A or B", "either 5 or 6") is no answer (``None``), never one of its parts.
``\boxed{A}`` after "e.g." (an echoed instruction) is not an answer either.
"""

from __future__ import annotations

import re
import string
from fractions import Fraction
from typing import NamedTuple

#: Numbers that are not both integers match when ``|a-b| <= max(ABS_TOL, REL_TOL*max(|a|,|b|))``.
#: Integers compare exactly (so ``1450001 != 1450000``); ``18 == 18.0 == "18.00" == "$18"``.
#: The relative tolerance absorbs float round-off and 7+ significant-digit rounding
#: (``0.3333333 == 1/3``) but not coarser rounding (``0.33 != 1/3``). The absolute one is 0
#: so that tiny quantities (``1.8e-15`` vs ``1.9e-15``) are still told apart; pass looser
#: values to :func:`numbers_close` / ``NumericTask(rel_tol=..., abs_tol=...)`` where needed.
REL_TOL = 1e-6
ABS_TOL = 0.0

# ---- LaTeX and markdown clean-up ----------------------------------------------------
_WRAPPER = re.compile(
    r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mathsf|mathtt|mbox|"
    r"operatorname|emph|boldsymbol|bm)\s*\{([^{}]*)\}"
)
_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([-−]?[\d.,]+)\s*\}\s*\{\s*([-−]?[\d.,]+)\s*\}")
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_JOIN = re.compile(r"\s*\$*\s*(?:,|/|&|or|and)\s*\$*\s*")
_EXAMPLE_BEFORE = re.compile(r"(?:e\.\s?g\.?|for example|for instance|such as|format)[\s,:(]*\$*\s*$", re.I)
_LATEX_SUBS = [
    (re.compile(r"(?<=\d)\\,(?=\d{3})"), ","),  # 1\,000 -> 1,000
    (re.compile(r"\{,\}"), ","),  # 1{,}000 -> 1,000
    (re.compile(r"\\[$%]"), lambda m: m.group()[1]),
    (re.compile(r"\^\s*\{?\\circ\}?|\\(?:left|right)\b|\\[,;:! ]|~"), " "),
    (re.compile(r"\\[()\[\]]"), " "),
]


def clean_latex(s: str) -> str:
    r"""Unwrap ``\text{..}``-style macros, turn ``\frac{a}{b}`` into ``a/b``, unescape ``\$ \%``.

    >>> clean_latex(r"\textbf{\text{B}}")
    'B'
    >>> clean_latex(r"\$\frac{3}{4} and 50\%")
    '$3/4 and 50%'
    """
    for _ in range(4):  # \textbf{\text{B}}: innermost first; deeper nesting is not an answer format
        s, n = _WRAPPER.subn(r"\1", s)
        if not n:
            break
    s = _FRAC.sub(r"\1/\2", s)
    for pattern, repl in _LATEX_SUBS:
        s = pattern.sub(repl, s)
    return s


class Box(NamedTuple):
    """One answer box: where it starts, what it holds, and whether it is joined to the box
    before it by or/and/a comma (``\\boxed{5} or \\boxed{6}``, a hedge)."""

    pos: int
    content: str
    joined: bool


def find_boxed(text: str) -> list[Box]:
    r"""Every ``\boxed{..}``/``\fbox{..}`` in order, nested braces matched.

    Empty boxes and boxes shown as an example (``e.g. \boxed{A}``, as in an echoed
    instruction) are left out.

    >>> find_boxed(r"e.g. \boxed{A}. So \boxed{\frac{1}{2}} or \boxed{} or \boxed{3}")
    [Box(pos=19, content='\\frac{1}{2}', joined=False), Box(pos=54, content='3', joined=False)]
    >>> [b.joined for b in find_boxed(r"\boxed{5} or $\boxed{6}$")]
    [False, True]
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    close, stack = {}, []
    for m in re.finditer(r"[{}]", text):  # one pass: the matching brace of every "{"
        if m[0] == "{":
            stack.append(m.start())
        elif stack:
            close[stack.pop()] = m.start()
    found: list[Box] = []
    prev_end = -1
    for m in _BOX_OPEN.finditer(text):
        end = close.get(m.end() - 1)
        content = text[m.end() : end].strip() if end is not None else ""
        if content and not _EXAMPLE_BEFORE.search(text, max(0, m.start() - 24), m.start()):
            joined = prev_end >= 0 and _BOX_JOIN.fullmatch(text, prev_end + 1, m.start()) is not None
            found.append(Box(m.start(), content, joined))
            prev_end = end
    return found


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{..}`` (see :func:`find_boxed`), or ``None``.

    >>> last_boxed(r"so \boxed{B} ... wait, \boxed{\text{C}}")
    '\\text{C}'
    >>> last_boxed("no box") is None
    True
    """
    boxes = find_boxed(text)
    return boxes[-1].content if boxes else None


# ---- numbers ----------------------------------------------------------------------
_INT = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
_DEC = rf"(?:{_INT}(?:\.\d+)?|\.\d+)"
_EXP = r"(?:[eE][-+−]?\d+|\s*(?:x|×|\\times|\\cdot|\*|·)\s*10\s*\^\s*\{?\s*[-+−]?\d+\s*\}?)"
_NUMBER = re.compile(
    rf"(?<![\w.])(?P<s1>[-−](?=[$\d.]))?\$?\s?(?P<s2>[-−](?=[\d.]))?"
    rf"(?P<a>{_DEC})(?:\s*/\s*(?P<b>{_DEC}))?(?P<e>{_EXP})?(?:\s*%)?"
)
_HEDGE_NUM = re.compile(rf"^\s*(?:,|;|\bor\b|\band\b|\bto\b)\s*\$?[-−]?{_DEC}")
_ANSWER_HEAD = re.compile(
    r"\b(?:final\s+answer|answer)\s*(?:(?:is|would\s+be|should\s+be|must\s+be|will\s+be|=|:)\s*)+", re.I
)
_HASHES = re.compile(r"####[ \t]*([^\n]{0,500})")
_SPAN = 500  # characters read after an answer phrase
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")


def _value(m: re.Match[str]) -> Fraction | None:
    if len(m["a"]) > 400 or len(m["b"] or "") > 400:  # no answer has 400 digits; keeps Fraction() fast
        return None
    value = Fraction(m["a"].replace(",", ""))
    if m["b"]:
        den = Fraction(m["b"].replace(",", ""))
        if den == 0:
            return None
        value /= den
    if m["e"]:
        digits = re.findall(r"[-+−]?\d+", m["e"])[-1].replace("−", "-")
        if len(digits) > 4 or abs(int(digits)) > 400:
            return None
        exponent = int(digits)
        value *= Fraction(10) ** exponent
    return -value if (m["s1"] or m["s2"]) else value


def parse_number(s: str) -> Fraction | None:
    r"""The one number ``s`` states (right-hand side of the last ``=``), exactly; else ``None``.

    Handles ``$``/``\$``, thousands commas, units after the number, ``%`` (``50%`` is 50),
    fractions ``3/4`` and ``\frac{3}{4}``, ``1.5e3`` and ``1.8 \times 10^{-5}``. Two or more
    numbers (``5 or 6``) or none give ``None``.

    >>> [parse_number(s) for s in ["$1,234.5", r"\frac{3}{4}", "-18 dollars", "1.5e3", "50%"]]
    [Fraction(2469, 2), Fraction(3, 4), Fraction(-18, 1), Fraction(1500, 1), Fraction(50, 1)]
    >>> parse_number("x = 2 * 9 = 18.00"), parse_number("5 or 6"), parse_number("none")
    (Fraction(18, 1), None, None)
    """
    s = clean_latex(s)
    s = s.rsplit("=", 1)[-1]
    found = list(_NUMBER.finditer(s))
    return _value(found[0]) if len(found) == 1 else None


def format_number(x: Fraction) -> str:
    """Canonical text of a number: integers without a decimal point, others as Python floats.

    >>> format_number(Fraction(36, 2)), format_number(Fraction(-3, 4)), format_number(Fraction(1, 3))
    ('18', '-0.75', '0.3333333333333333')
    """
    return str(x.numerator) if x.denominator == 1 else repr(float(x))


def sample_tolerances(meta: dict, rel_tol: float, abs_tol: float) -> tuple[float, float]:
    """A task's tolerances, loosened where the sample's ``meta["grading"]`` asks (a dataset whose golds are
    rounded, e.g. the ReFT release, graded as its authors grade it: within 0.01).

    >>> sample_tolerances({"grading": {"abs_tol": 0.01}}, 1e-6, 0.0), sample_tolerances({}, 1e-6, 0.0)
    ((1e-06, 0.01), (1e-06, 0.0))
    """
    grading = meta.get("grading") or {}
    return max(rel_tol, float(grading.get("rel_tol", 0.0))), max(abs_tol, float(grading.get("abs_tol", 0.0)))


def numbers_close(a: str | float | Fraction, b: str | float | Fraction, *, rel_tol: float = REL_TOL, abs_tol: float = ABS_TOL) -> bool:
    """Whether two numbers (or number strings) are equal within the tolerances of :data:`REL_TOL`.

    >>> numbers_close("18", "18.00"), numbers_close("$1,450,000", 1450000.0), numbers_close("0.3333333", "1/3")
    (True, True, True)
    >>> numbers_close("1450001", "1450000"), numbers_close("0.33", "1/3"), numbers_close("n/a", "1")
    (False, False, False)
    """
    fa, fb = (parse_number(v) if isinstance(v, str) else Fraction(v) for v in (a, b))
    if fa is None or fb is None:
        return False
    if fa == fb:
        return True
    if fa.denominator == 1 and fb.denominator == 1:
        return False
    return abs(fa - fb) <= max(Fraction(abs_tol), Fraction(rel_tol) * max(abs(fa), abs(fb)))


def _number_after_head(segment: str) -> Fraction | None | str:
    """First number of a sentence that follows an answer phrase; ``"hedge"`` for ``5 or 6``."""
    segment = _SENTENCE_END.split(segment.lstrip(), 1)[0]
    segment = segment.rsplit("=", 1)[-1]
    m = _NUMBER.search(segment)
    if m is None:
        return None
    return "hedge" if _HEDGE_NUM.match(segment[m.end() :]) else _value(m)


def extract_number(text: str) -> str | None:
    r"""The final numeric answer of a completion, canonical (:func:`format_number`), or ``None``.

    Last of ``\boxed{..}``, ``#### n`` and "answer is n"/"Answer: n" wins; without any, the
    last number of the text, unless the text ends in a question or a hedge.

    >>> extract_number("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18")
    '18'
    >>> extract_number(r"So the total is \boxed{\$1{,}234.50}."), extract_number("The answer is: 1,234.5.")
    ('1234.5', '1234.5')
    >>> extract_number(r"\boxed{\frac{3}{4}}"), extract_number("It costs 18 dollars"), extract_number("5 or 6")
    ('0.75', '18', None)
    """
    text = clean_latex(text)
    candidates: list[tuple[int, Fraction | None | str]] = [
        (b.pos, "hedge" if b.joined else parse_number(b.content)) for b in find_boxed(text)
    ]
    candidates += [(m.start(), _number_after_head(m[1])) for m in _HASHES.finditer(text)]
    for m in _ANSWER_HEAD.finditer(text):
        value = _number_after_head(text[m.end() : m.end() + _SPAN])
        if value is not None:
            candidates.append((m.start(), value))
    if candidates:
        value = max(candidates, key=lambda c: c[0])[1]
        return format_number(value) if isinstance(value, Fraction) else None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    numbers = list(_NUMBER.finditer(text))
    if not numbers or lines[-1].endswith("?") or re.search(r"\bor\s*$", text[: numbers[-1].start()]):
        return None
    value = _value(numbers[-1])
    return format_number(value) if value is not None else None


# ---- text -------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces.

    >>> normalize_text("  The Eiffel-Tower. ")
    'eiffeltower'
    >>> normalize_text("An apple,  a DAY")
    'apple day'
    """
    return " ".join(_ARTICLES.sub(" ", s.lower().translate(_PUNCT)).split())


def strip_markup(s: str) -> str:
    """Markdown emphasis, ``$`` and quotes around a short answer removed.

    >>> strip_markup('**"Paris".**')
    'Paris'
    """
    return re.sub(r"[*`$]", "", s).strip().strip("\"'").rstrip(".").strip().strip("\"'")


def extract_text(text: str) -> str | None:
    r"""The final free-text answer: last ``\boxed{..}`` or answer phrase, else the last line.

    >>> extract_text(r"It is in France, so \boxed{\text{Paris}}.")
    'Paris'
    >>> extract_text("Thinking...\nThe answer is: **Paris**.\n"), extract_text("  \n")
    ('Paris', None)
    """
    text = clean_latex(text)
    candidates = [(b.pos, b.content) for b in find_boxed(text)]
    for m in _ANSWER_HEAD.finditer(text):
        rest = text[m.end() : m.end() + _SPAN].lstrip()
        candidates.append((m.start(), rest.split("\n", 1)[0]))
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if candidates:
        answer = max(candidates, key=lambda c: c[0])[1]
    elif lines:
        answer = lines[-1]
    else:
        return None
    return strip_markup(answer) or None


def texts_match(pred: str, gold: str) -> bool:
    """SQuAD-style exact match after :func:`normalize_text`.

    >>> texts_match("the Paris.", "paris"), texts_match("Lyon", "Paris")
    (True, False)
    """
    return normalize_text(pred) == normalize_text(gold)
