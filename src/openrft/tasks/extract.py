r"""Pure answer-extraction functions: strings in, canonical answers out.

The graders in :mod:`openrft.tasks.mcq`, :mod:`~openrft.tasks.numeric` and
:mod:`~openrft.tasks.text` compose these. Evidence is read in two tiers:

1. **explicit final answers**: ``\boxed{..}``, ``#### n`` and answer phrases ("The answer
   is C", "Answer: (b)", "C is correct", "I choose C"). The *last* one in the text wins, so
   a model that corrects itself is graded on its correction.
2. only when there is none, **a final line that stands as an answer**: a bare letter, an
   option's text, the last number (see :mod:`openrft.tasks.mcq` for letters).

A hedge ("A or B", "either 5 or 6") is no answer (``None``), never one of its parts.
``\boxed{A}`` after "e.g." (an echoed instruction) is not an answer either.
"""

from __future__ import annotations

import re
import string
from fractions import Fraction

from openrft.data.sample import LETTERS

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
_EXAMPLE_BEFORE = re.compile(r"(?:e\.\s?g\.?|for example|for instance|such as|like|format)[\s,:(]*\$*\s*$", re.I)
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
    prev = None
    while prev != s:
        prev, s = s, _WRAPPER.sub(r"\1", s)
    s = _FRAC.sub(r"\1/\2", s)
    for pattern, repl in _LATEX_SUBS:
        s = pattern.sub(repl, s)
    return s


def find_boxed(text: str) -> list[tuple[int, str]]:
    r"""``(position, content)`` of every ``\boxed{..}``/``\fbox{..}``, nested braces matched.

    Empty boxes and boxes shown as an example (``e.g. \boxed{A}``, as in an echoed
    instruction) are left out.

    >>> find_boxed(r"e.g. \boxed{A}. So \boxed{\frac{1}{2}} and \boxed{}")
    [(19, '\\frac{1}{2}')]
    """
    found = []
    for m in _BOX_OPEN.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        content = text[m.end() : i - 1].strip()
        if depth == 0 and content and not _EXAMPLE_BEFORE.search(text[max(0, m.start() - 24) : m.start()]):
            found.append((m.start(), content))
    return found


def _box_hedged(text: str, pos: int) -> bool:
    """Whether the box at ``pos`` follows another box through or/and/a comma (``\\boxed{5} or \\boxed{6}``)."""
    return bool(re.search(r"\\(?:boxed|fbox)\s*\{[^\n]*\}\s*\$*\s*(?:,|/|&|\bor\b|\band\b)\s*\$*\s*$", text[:pos]))


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{..}`` (see :func:`find_boxed`), or ``None``.

    >>> last_boxed(r"so \boxed{B} ... wait, \boxed{\text{C}}")
    '\\text{C}'
    >>> last_boxed("no box") is None
    True
    """
    boxes = find_boxed(text)
    return boxes[-1][1] if boxes else None


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
_HASHES = re.compile(r"####\s*([^\n]*)")
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")


def _value(m: re.Match[str]) -> Fraction | None:
    value = Fraction(m["a"].replace(",", ""))
    if m["b"]:
        den = Fraction(m["b"].replace(",", ""))
        if den == 0:
            return None
        value /= den
    if m["e"]:
        value *= Fraction(10) ** int(re.findall(r"[-+−]?\d+", m["e"])[-1].replace("−", "-"))
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
        (p, "hedge" if _box_hedged(text, p) else parse_number(c)) for p, c in find_boxed(text)
    ]
    candidates += [(m.start(), _number_after_head(m[1])) for m in _HASHES.finditer(text)]
    for m in _ANSWER_HEAD.finditer(text):
        value = _number_after_head(text[m.end() :])
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
    candidates = find_boxed(text)
    for m in _ANSWER_HEAD.finditer(text):
        rest = text[m.end() :].lstrip()
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


# ---- multiple-choice letters ------------------------------------------------------
_HEDGE = "hedge"
_LETTER = r"(?<![A-Za-z0-9])(?P<open>[(\[\"'])?[ \t]*(?P<L>[A-Za-z])(?![A-Za-z0-9])[ \t]*(?P<close>[)\]\"'])?"
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
    r"\b(?:I(?:\s*'d|\s*'ll|\s+would|\s+will|\s+shall)?|let'?s|let\s+us|we)\s+"
    r"(?:choose|select|pick|go\s+with|opt\s+for)\s+(?:(?:the\s+)?(?:option|choice|answer|letter)\s*)?",
    re.I,
)
_LINK_WORDS = frozenset("because since as which with for due given from according is would".split())
_BARE_LINE = re.compile(r"(?:(?:so|therefore|thus|hence|option|choice)\W+)*[(\[]?[ \t]*([A-Za-z])[ \t]*[)\]]?[ \t]*[.:]?", re.I)
_TEXT_LINE = re.compile(r"[(\[]?[ \t]*([A-Za-z])[ \t]*(?:[)\]]|\.|:)[ \t]*(\S.*)")


def _letter_stands(text: str, m: re.Match[str], labels: str) -> bool:
    """Whether a matched letter token is an answer, not an article ("A reaction") or a word."""
    letter = m["L"]
    if letter.upper() not in labels:
        return False
    if m["open"] or m["close"] or re.match(r"[ \t]*(?:$|[\n.,;:!?)\]}\-—])", text[m.end() :]):
        return True
    word = re.match(r"[ \t]*([A-Za-z]+)", text[m.end() :])
    return bool(word) and (word[1].lower() in _LINK_WORDS or (letter.isupper() and letter not in "AI"))


def _hedged(text: str, start: int, end: int, labels: str) -> bool:
    """Whether the letter at ``text[start:end]`` is one of several joined by or/and/commas."""
    tok = rf"(?<![A-Za-z0-9])(?i:(?:option|choice)\s+)?(?:[(\[\"']?[{labels}]|\([{labels.lower()}]\))(?![A-Za-z0-9])"
    conj = r"[ \t]*(?:,|/|&|(?i:\bor\b|\band\b|\bnor\b))[ \t]*"
    after = re.match(rf"[)\]\"']?{conj}{tok}", text[end:])
    before = re.search(rf"{tok}[)\]\"']?{conj}(?i:(?:option|choice)\s+)?[(\[\"']?[ \t]*$", text[:start])
    return bool(after or before)


def _option_key(s: str) -> str:
    return " ".join(strip_markup(clean_latex(s)).lower().split())


def match_option(answer: str, choices: tuple[str, ...] | list[str] | None) -> str | None:
    """Letter of the one option whose text equals ``answer`` (case/space/markup-insensitive).

    >>> match_option("**-3.2 L  atm.**", ["-3.2 L atm", "+3.2 L atm"]), match_option("6", ["6", "6"])
    ('A', None)
    """
    key = _option_key(answer)
    hits = [i for i, c in enumerate(choices or ()) if _option_key(c) == key]
    return LETTERS[hits[0]] if key and len(hits) == 1 else None


def _agrees(letter: str, rest: str, labels: str, choices: tuple[str, ...] | list[str] | None) -> bool:
    """False when the text after ``B.`` is another option's text or holds another label (``(C) ..``)."""
    if any(x != letter.upper() for x in re.findall(rf"(?:^|\s)[(\[]?([{labels}])[)\].:](?=\s)", rest)):
        return False
    other = match_option(rest.lstrip(" \t.):-"), choices) if choices else None
    return other is None or other == letter.upper()


def _choice_from_span(s: str, labels: str, choices: tuple[str, ...] | list[str] | None) -> str | None:
    m = _LETTER_AT.match(s)
    if m and _letter_stands(s, m, labels):
        if _hedged(s, m.start("L"), m.end("L"), labels):
            return _HEDGE
        return m["L"].upper() if _agrees(m["L"], s[m.end() :], labels, choices) else None
    return match_option(s, choices)


def _line_choice(line: str, labels: str, choices: tuple[str, ...] | list[str] | None) -> tuple[str, str] | None:
    for form, pattern in (("bare", _BARE_LINE), ("text", _TEXT_LINE)):
        m = pattern.fullmatch(line)
        if m and m[1].upper() in labels:
            return (form, m[1].upper()) if form == "bare" or _agrees(m[1], m[2], labels, choices) else None
    letter = match_option(line, choices)
    return ("option", letter) if letter else None


def _final_line_choice(text: str, labels: str, choices: tuple[str, ...] | list[str] | None) -> str | None:
    """A last line that stands as an answer; ``None`` when it ends an echoed option list."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[-1].endswith("?"):
        return None
    kinds = [_line_choice(ln, labels, choices) for ln in lines]
    if kinds[-1] is None:
        return None
    form, letter = kinds[-1]
    # a bare "B" may follow an echoed "A. ..", "B. .." list; a lettered or option-text line may not
    clash = any(k and k[1] != letter and (form != "bare" or k[0] == "bare") for k in kinds[:-1])
    return None if clash else letter


def extract_letter(text: str, choices: tuple[str, ...] | list[str] | None = None, labels: str | None = None) -> str | None:
    r"""The option letter a completion gives as its final answer, upper case, or ``None``.

    ``labels`` defaults to one letter per choice (``"ABCD"`` without choices). Explicit
    answers (boxed, "answer is X", "X is correct", "I choose X", or an option's text after
    "answer is") come first, the last one winning; then a last line that is a bare letter,
    ``B. text`` or an option's text. Hedges, echoed option lists and restated questions
    give ``None``.

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
    candidates = [(p, _HEDGE if _box_hedged(text, p) else _choice_from_span(c, labels, choices)) for p, c in find_boxed(text)]
    for m in _CHOICE_HEAD.finditer(text):
        letter = _choice_from_span(text[m.end() :].split("\n", 1)[0], labels, choices)
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
    final = _final_line_choice(text, labels, choices)
    if final:  # a last line standing as an answer is the last statement of all
        candidates.append((text.rstrip().rfind("\n") + 1, final))
    result = max(candidates, key=lambda c: c[0])[1] if candidates else None
    return None if result in (None, _HEDGE) else result
