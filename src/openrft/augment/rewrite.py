r"""Question rewriting by an LLM: the prompt, robust parsing of the reply, validation of each variant.

The rewriter sees the question STEM only (never the options) and is asked for ``k``
meaning-preserving variants separated by ``<sep>`` (OpenRFT section 2.1): with the ``paper`` prompt in
OpenRFT Fig. 2's words (the paragraph in ``k`` different expressions, meaning unchanged, separated by
``<sep>``), or with the ``strict`` prompt, which also spells out what the variants must keep. Models ignore
the marker, number their variants, add preambles and quotes; :func:`parse_variants` copes
with all of that. :func:`validate_variant` then applies named rules, in this order (the
first failing rule is the variant's ``reason``; every failing rule is listed in ``failed``):

``empty``               nothing left after cleaning
``prompt_echo``         repeats a stretch of the rewriting instruction
``duplicate_original``  same as the original after normalization, or more similar than the threshold
``duplicate_variant``   same, against a variant kept before it
``off_topic``           keeps too few of the original's content words (a different question, or chatter)
``not_a_question``      the original asks something; the variant neither asks nor instructs, or trails off in ":"
``option_listing``      lists lettered options / option texts the original does not have
``answer_leak``         states the gold option's text, or an answer ("the answer is"), which the original does not
``lost_tokens``         drops a number, unit, formula, LaTeX span, SMILES/IUPAC identifier or sequence
``added_numbers``       introduces numbers the original does not have
``length_ratio``        much shorter or much longer than the original

>>> parse_variants("Here are 2 versions:\n1. What is 2+2?\n2. \"Compute 2+2.\"")
['What is 2+2?', 'Compute 2+2.']
>>> validate_variant("Compute 3 + 3.", "What is 2 + 2?").failed
('lost_tokens', 'added_numbers')
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from openrft.augment.tokens import Token, missing_tokens, numbers_in, protected_tokens
from openrft.data.leakage import normalize_text

SEP = "<sep>"

#: OpenRFT Fig. 2's instruction: the paragraph (the question) in k different expressions, separated by <sep>
PAPER_INSTRUCTION = (
    "Rewrite the following paragraph into {k} different expression{s}, keeping its meaning unchanged. "
    "Output only the {k} expression{s}, separated by <sep>."
)
#: openrft's own instruction: also names what every variant must keep and must not add
STRICT_INSTRUCTION = (
    "Rewrite the question below into {k} different versions. Each version must keep exactly the same "
    "meaning and every number, unit, formula, name and sequence of the original. Do not add any "
    "information, hints or answer options, and do not answer the question. Adjust the wording and the "
    "sentence structure. Output only the {k} rewritten questions, separated by the marker <sep>."
)
#: the joint-mode instructions by name, and the label of the question under each
PROMPTS = {"paper": PAPER_INSTRUCTION, "strict": STRICT_INSTRUCTION}
PROMPT_LABELS = {"paper": "Paragraph", "strict": "Question"}
RETRY_EXTRA = "These versions exist already; write {k} new ones that differ from them:\n{existing}"
SINGLE_INSTRUCTION = (
    "Rewrite the question below. Keep exactly the same meaning and every number, unit, formula, name and "
    "sequence of the original. Do not add any information, hints or answer options, and do not answer the "
    "question. Adjust the wording and the sentence structure. Output only the rewritten question."
)
SINGLE_RETRY_EXTRA = "Write it differently from these versions:\n{existing}"

RULES = ("empty", "prompt_echo", "duplicate_original", "duplicate_variant", "off_topic", "not_a_question",
         "option_listing", "answer_leak", "lost_tokens", "added_numbers", "length_ratio")


def rewrite_messages(question: str, k: int, existing: Sequence[str] = (), single: bool = False,
                     prompt: str = "paper") -> list[dict[str, str]]:
    """Chat messages asking for ``k`` variants of ``question`` (the stem, without options).

    ``existing`` variants (from an earlier attempt) are listed so the model writes new ones.
    ``single`` asks for one variant per reply (sample ``n`` replies instead): easier for small models.
    ``prompt`` names the joint instruction (:data:`PROMPTS`); single mode has its own.

    >>> print(rewrite_messages("What is 2+2?", 5)[0]["content"])
    Rewrite the following paragraph into 5 different expressions, keeping its meaning unchanged. Output only the 5 expressions, separated by <sep>.
    <BLANKLINE>
    Paragraph:
    What is 2+2?
    """
    if prompt not in PROMPTS:
        raise ValueError(f"unknown rewrite prompt {prompt!r}; valid: {', '.join(PROMPTS)}")
    label = "Question" if single else PROMPT_LABELS[prompt]
    if single:
        text = SINGLE_INSTRUCTION
        if existing:
            text += "\n\n" + SINGLE_RETRY_EXTRA.format(existing="\n".join(f"- {e}" for e in existing))
    else:
        text = PROMPTS[prompt].format(k=k, s="" if k == 1 else "s")
        if existing:
            text += "\n\n" + RETRY_EXTRA.format(k=k, existing="\n".join(f"{SEP} {e}" for e in existing))
    return [{"role": "user", "content": f"{text}\n\n{label}:\n{question.strip()}"}]


# ---------------------------------------------------------------- parsing
_SEP_RE = re.compile(
    r"\\?<\s*/?\s*sep\s*/?\s*\\?>"          # <sep>, < sep >, </sep>, <sep/>, \<sep\>
    r"|\[\s*/?\s*sep\s*\]"                   # [SEP], [/sep]
    r"|<\|\s*sep\s*\|>|\|\|\s*sep\s*\|\|"    # <|sep|>, ||sep||
    r"|&lt;\s*sep\s*&gt;"                    # HTML-escaped
    r"|(?m:^[ \t]*sep[ \t]*$)",              # a bare SEP line
    re.IGNORECASE,
)
_HR_RE = re.compile(r"(?m)^[ \t]*(?:-{3,}|\*{3,}|={3,}|_{3,})[ \t]*$")
_THINK_RE = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"(?m)^[ \t]*```[\w-]*[ \t]*$")
_LABEL = (r"(?:(?:rewritten|rewrite|reworded|rephrased|paraphrased|new|alternative|alternate)\s+)?"
          r"(?:variant|version|rewrite|paraphrase|question|q)")
#: the paper prompt's words, as labels only when numbered ("Expression:" alone may be the question's own)
_NUMBERED_LABEL = r"(?:expression|paragraph)(?=\s*#?\s*\d)"
_LABEL_RE = re.compile(rf"^\s*(?:\*\*|__)?\s*(?:{_LABEL}|{_NUMBERED_LABEL})\s*#?\s*(\d{{0,2}})"
                       r"\s*(?:\*\*|__)?\s*[:.)\-–—]\s*(?:\*\*|__)?\s*", re.IGNORECASE)
_NUMBER_ITEM_RE = re.compile(r"^\s*(?:\*\*)?\(?(\d{1,2})\s*[.):](?!\d)(?:\*\*)?\s+")
_BULLET_RE = re.compile(r"^\s*[-*•‣–]\s+")
_PREAMBLE_RE = re.compile(
    r"^\s*(?:here\s+(?:are|is)|sure|certainly|okay|ok\b|of course|below\s+(?:are|is)|the following)"
    rf"|^.*\b(?:{_LABEL}|versions|variants|rewrites)\b.*:\s*$", re.IGNORECASE)
_HEADING_RE = re.compile(r"^\s*(?:\*\*|__)?\s*[A-Za-z][A-Za-z0-9 '\-]{0,40}?\s*(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*$")
_CLOSING_RE = re.compile(r"^\s*(?:i hope|let me know|hope this|note:|these (?:versions|variants))", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "`": "`", "«": "»", "„": "“", "”": "”"}


def _clean(piece: str) -> str:
    """One variant without labels, list markers, markdown emphasis, wrapping quotes and stray whitespace."""
    text = piece.strip()
    for _ in range(3):  # "1. **Variant 1:** "..." peels in a few passes
        before = text
        text = _LABEL_RE.sub("", text, count=1)
        text = _NUMBER_ITEM_RE.sub("", text, count=1)
        text = _BULLET_RE.sub("", text, count=1).strip()
        for mark in ("**", "__", "*"):
            if len(text) > 2 * len(mark) and text.startswith(mark) and text.endswith(mark):
                text = text[len(mark):-len(mark)].strip()
        if len(text) >= 2 and text[0] in _QUOTES and text[-1] == _QUOTES[text[0]] \
                and text.count(text[0]) + (text.count(text[-1]) if text[-1] != text[0] else 0) == 2:
            text = text[1:-1].strip()
        if text == before:
            break
    lines = [ln.rstrip() for ln in text.splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    text = re.sub(r"[ \t]{2,}", " ", text)
    return text.strip(" \t\n-=_|")


def _list_items(lines: list[str]) -> tuple[int, list[str]] | None:
    """``(first line, items)`` of a numbered (1., 2., ...), labelled (Variant 1:) or bullet list; None if none."""
    starts = []
    expect = 1
    for i, line in enumerate(lines):
        m = _LABEL_RE.match(line) or _NUMBER_ITEM_RE.match(line)
        if m and m.group(1) and int(m.group(1)) == expect:
            starts.append(i)
            expect += 1
    if len(starts) < 2:  # "Rewritten question: ..." on every line, unnumbered
        starts = [i for i, line in enumerate(lines) if (m := _LABEL_RE.match(line)) and not m.group(1)
                  and line[m.end():].strip()]
    if len(starts) < 2:
        starts = [i for i, line in enumerate(lines) if _BULLET_RE.match(line)]
        if len(starts) < 2:
            return None
    return starts[0], ["\n".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)])]


def parse_variants(text: str, original: str | None = None) -> list[str]:
    r"""Variants in a rewriter's reply, in order; ``[]`` when it holds none.

    Splits on ``<sep>`` and its variations (``< sep >``, ``[SEP]``, ``</sep>``, ``<|sep|>``); without
    a marker, on a numbered/labelled/bulleted list; without a list, on blank lines when the
    ``original`` question has none (else the whole reply is one variant). Preambles
    ("Here are 5 versions:"), labels ("Variant 1:"), list markers, markdown emphasis and
    wrapping quotes are removed. A piece that is only a label is returned as ``""`` so the
    validator can name it ``empty``.

    >>> parse_variants("What is x?<sep> [SEP] 'Find x.' < sep >Variant 3: Give x.")
    ['What is x?', 'Find x.', 'Give x.']
    >>> parse_variants("Sure! Here are the rewrites:\n\n- Find x.\n- What is x?\n\nI hope this helps!")
    ['Find x.', 'What is x?']
    >>> parse_variants("")
    []
    """
    text = unicodedata.normalize("NFC", text or "")
    text = _FENCE_RE.sub("", _THINK_RE.sub("", text)).strip()
    if not text:
        return []
    original_has_blank = original is not None and bool(re.search(r"\n\s*\n", original.strip()))
    original_lines = {normalize_text(ln) for ln in (original or "").splitlines()}

    def heading(line: str) -> bool:  # "Sentence Structure:", "Output:" (unless the original has that line)
        return bool(_HEADING_RE.match(line)) and normalize_text(line) not in original_lines

    original_headed = any(_HEADING_RE.match(ln) for ln in (original or "").splitlines())

    if _SEP_RE.search(text):
        pieces = _SEP_RE.split(text)
    else:
        lines = text.splitlines()
        original_listy = original is not None and _list_items(original.splitlines()) is not None
        listed = None if original_listy else _list_items(lines)
        if _HR_RE.search(text):
            pieces = _HR_RE.split(text)
        elif listed is not None:
            start, pieces = listed
            head = "\n".join(lines[:start]).strip()
            if head and not _PREAMBLE_RE.match(head.splitlines()[-1]):
                pieces.insert(0, head)  # text before the list that is not a preamble: keep it as a variant
        elif original is not None and "\n" not in original.strip():
            # a one-line question: each line of the reply is one variant ("Question:" lines are labels)
            pieces = [ln for ln in text.splitlines() if not heading(ln)]
        elif original is not None and not original_has_blank:
            pieces = re.split(r"\n\s*\n", text)
        else:
            pieces = [text]
    out = []
    for i, piece in enumerate(pieces):
        lines = piece.strip().splitlines()
        filled = [ln for ln in lines if ln.strip()]
        if filled and all(heading(ln) for ln in filled):  # only labels: "" so that validation names it empty
            out.append("")
            continue
        while lines and (not lines[0].strip() or (heading(lines[0]) and not original_headed)):
            lines.pop(0)  # a leading label line, unless the original itself has headed blocks ("Given data:")
        while lines and (not lines[-1].strip() or heading(lines[-1])):
            lines.pop()
        while lines and (not lines[0].strip() or (_PREAMBLE_RE.match(lines[0]) and not _LABEL_RE.match(lines[0])
                                                  and len(lines[0]) < 120)):
            lines.pop(0)  # "Here are 5 versions:" before the first variant (or a stray one later)
        while lines and (not lines[-1].strip() or _CLOSING_RE.match(lines[-1])):
            lines.pop()
        if not lines:
            continue
        # a trailing "I hope this helps" paragraph inside the last piece
        joined = "\n".join(lines)
        if i == len(pieces) - 1:
            paras = re.split(r"\n\s*\n", joined)
            while len(paras) > 1 and _CLOSING_RE.match(paras[-1]):
                paras.pop()
            joined = "\n\n".join(paras)
        out.append(_clean(joined))
    return out


# ----------------------------------------------------------------- rules
_OPTION_LINE_RE = re.compile(r"(?m)^\s*\(?([A-H])\s*[.):\]]\s+\S")
_OPTION_INLINE_RE = re.compile(r"(?:^|\s)\(?([A-H])[.)]\s+\S")
_ANSWER_RE = re.compile(r"\b(?:the\s+(?:correct\s+|final\s+)?answer\s+(?:is|to\s+this|would\s+be)|"
                        r"(?:correct\s+|final\s+)?answer\s*[:=])|\\boxed\{", re.IGNORECASE)
_OPTIONS_WORD_RE = re.compile(r"\b(?:options?|choices?|answer choices)\s*:", re.IGNORECASE)


def _option_letters(text: str) -> set[str]:
    return set(_OPTION_LINE_RE.findall(text)) | set(_OPTION_INLINE_RE.findall(text))


_STOPWORDS = frozenset(
    "what which when where whose there their these those this that with from have does into about given "
    "following would could should will your they then than each other some such also only many much more most "
    "very were been being question answer please value values approximately following using used".split())
_ASKING_RE = re.compile(  # a question mark, or a clause opening with a question word or an instruction
    r"\?|(?:^|[.!:;,\n]\s*)(?:please\s+|now\s+|then\s+)?(?:what|which|who|whom|whose|when|where|why|how|whether|"
    r"find|determine|calculate|compute|give|estimate|state|identify|name|explain|describe|predict|choose|"
    r"select|evaluate|derive|obtain|express|show|list|decide|rank|compare|classify|count|tell|suggest|propose|"
    r"infer|analy[sz]e|consider|assume|based on|pick|match|convert|solve|arrange|write|fill)\b", re.IGNORECASE)


def content_recall(variant: str, original: str) -> float | None:
    """Fraction of the original's content words (4+ letters, no stopwords) that ``variant`` keeps, by 5-letter stem.

    None when the original has fewer than two content words.

    >>> content_recall("Explain how a solute's concentration is calculated.", "How do you calculate the concentration?")
    1.0
    """
    def stems(text: str) -> set[str]:
        return {w[:5] for w in normalize_text(text).split() if len(w) >= 4 and w.isalpha() and w not in _STOPWORDS}

    want = stems(original)
    if len(want) < 2:
        return None
    return len(want & stems(variant)) / len(want)


def similarity(a: str, b: str) -> float:
    """Word-level similarity of normalized texts in [0, 1] (1.0: equal after normalization).

    >>> similarity("What is 2+2?", "what is 2 + 2"), round(similarity("What is x?", "Find x."), 2)
    (1.0, 0.4)
    """
    wa, wb = normalize_text(a).split(), normalize_text(b).split()
    if wa == wb:
        return 1.0
    return SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def _ngrams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = normalize_text(text).split()
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


_INSTRUCTION_NGRAMS = set().union(*(_ngrams(t.format(k="", s="s", existing="")) for t in (
    PAPER_INSTRUCTION, STRICT_INSTRUCTION, RETRY_EXTRA, SINGLE_INSTRUCTION, SINGLE_RETRY_EXTRA)))


@dataclass(frozen=True)
class ValidationRules:
    """Thresholds of the rule-based validation."""

    similarity_threshold: float = field(default=0.9, metadata={
        "help": "a variant at least this similar (word-level, normalized) to the original or to a kept variant "
                "is a near duplicate"})
    min_length_ratio: float = field(default=0.5, metadata={
        "help": "drop variants shorter than this times the original"})
    max_length_ratio: float = field(default=2.0, metadata={
        "help": "drop variants longer than this times the original (originals under 80 characters count as 80)"})
    require_tokens: bool = field(default=True, metadata={
        "help": "drop variants that lose a number, unit, formula, LaTeX span, SMILES/IUPAC identifier or sequence"})
    forbid_new_numbers: bool = field(default=True, metadata={"help": "drop variants that introduce new numbers"})
    min_content_recall: float = field(default=0.5, metadata={
        "help": "drop variants keeping less than this fraction of the original's content words (5-letter stems)"})


@dataclass(frozen=True)
class Verdict:
    """Outcome of validating one variant: ``reason`` is the first failing rule (None when kept)."""

    failed: tuple[str, ...] = ()
    detail: str = ""
    similarity: float | None = None

    @property
    def kept(self) -> bool:
        return not self.failed

    @property
    def reason(self) -> str | None:
        return self.failed[0] if self.failed else None


def _options_and_leaks(text: str, original: str, choices: Sequence[str] | None,
                       gold: str | None) -> list[tuple[str, str]]:
    """``option_listing`` and ``answer_leak``, with what gave them away."""
    out = []
    letters = _option_letters(text) - _option_letters(original)
    listed = []
    if choices:
        norm_orig, norm_text = normalize_text(original), f" {normalize_text(text)} "
        listed = [c for c in choices if len(normalize_text(c)) >= 4 and normalize_text(c) not in norm_orig
                  and f" {normalize_text(c)} " in norm_text]
    options_word = _OPTIONS_WORD_RE.search(text) and not _OPTIONS_WORD_RE.search(original)
    if len(letters) >= 2 or len(listed) >= 2 or options_word:
        out.append(("option_listing", f"lists options {''.join(sorted(letters))}" if len(letters) >= 2 else
                     f"states {len(listed)} option texts" if len(listed) >= 2 else "adds an options list"))
    leak = None
    if choices and gold and gold in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:len(choices)] and len(listed) < 2:
        g = normalize_text(choices["ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(gold)])
        if len(g) >= 4 and g not in normalize_text(original) and f" {g} " in f" {normalize_text(text)} ":
            leak = "states the gold option's text"
    if leak is None and _ANSWER_RE.search(text) and not _ANSWER_RE.search(original):
        leak = f"states an answer ({_ANSWER_RE.search(text).group(0).strip()!r})"
    if leak:
        out.append(("answer_leak", leak))
    return out


def _lost_and_added(text: str, original: str, rules: ValidationRules,
                    tokens: Sequence[Token] | None) -> list[tuple[str, str]]:
    """``lost_tokens`` and ``added_numbers``, with the tokens and numbers at fault."""
    out = []
    if rules.require_tokens:
        toks = protected_tokens(original) if tokens is None else tokens
        lost = missing_tokens(toks, text)
        if lost:
            out.append(("lost_tokens", "lost " + ", ".join(str(t) for t in lost[:5])
                        + (" ..." if len(lost) > 5 else "")))
    if rules.forbid_new_numbers:
        new = {n.lstrip("-") for n in numbers_in(text, words=False, standalone=True)} \
            - {n.lstrip("-") for n in numbers_in(original, standalone=True)}
        if new:
            out.append(("added_numbers", "adds " + ", ".join(sorted(new)[:5])))
    return out


def validate_variant(variant: str, original: str, others: Sequence[str] = (), *,
                     choices: Sequence[str] | None = None, gold: str | None = None,
                     rules: ValidationRules = ValidationRules(),
                     tokens: Sequence[Token] | None = None) -> Verdict:
    """Apply every rule (see the module docstring) to ``variant`` of ``original``.

    ``others`` are variants kept before this one; ``choices``/``gold`` (the gold letter) enable
    ``option_listing`` and ``answer_leak``; ``tokens`` caches :func:`protected_tokens` of the original.

    >>> v = validate_variant("Find the value of 2 + 2.", "What is 2 + 2?")
    >>> v.kept, v.reason
    (True, None)
    >>> validate_variant("What is 2+2?", "What is 2 + 2?").failed
    ('duplicate_original',)
    >>> validate_variant("Which is 2 + 2? A) 4 B) 5", "What is 2 + 2?", choices=["4", "5"]).reason
    'option_listing'
    """
    failed: list[str] = []
    details: list[str] = []
    text = (variant or "").strip()
    if not normalize_text(text):
        return Verdict(("empty",), "nothing left after cleaning")
    echo = (_ngrams(text) & _INSTRUCTION_NGRAMS) - _ngrams(original)
    if echo:
        failed.append("prompt_echo")
        details.append("echoes the instruction: " + " ".join(next(iter(sorted(echo)))))
    sim = similarity(text, original)
    if sim >= rules.similarity_threshold:
        failed.append("duplicate_original")
        details.append("exact duplicate of the original" if sim == 1.0 else f"similarity {sim:.2f} to the original")
    for j, other in enumerate(others):
        s = similarity(text, other)
        if s >= rules.similarity_threshold:
            failed.append("duplicate_variant")
            details.append(f"similarity {s:.2f} to kept variant {j + 1}")
            break
    recall = content_recall(text, original)
    if recall is not None and recall < rules.min_content_recall:
        failed.append("off_topic")
        details.append(f"keeps {recall:.0%} of the original's content words")
    trails = text.rstrip().endswith(":") and not original.rstrip().endswith(":")
    if _ASKING_RE.search(original) and (not _ASKING_RE.search(text) or trails):
        failed.append("not_a_question")
        details.append("trails off with ':'" if trails else "neither asks nor instructs")
    for rule, detail in _options_and_leaks(text, original, choices, gold):
        failed.append(rule)
        details.append(detail)
    for rule, detail in _lost_and_added(text, original, rules, tokens):
        failed.append(rule)
        details.append(detail)
    ratio = len(text) / max(len(original.strip()), 1)
    if len(text) < rules.min_length_ratio * len(original.strip()) or \
            len(text) > rules.max_length_ratio * max(len(original.strip()), 80):
        failed.append("length_ratio")
        details.append(f"length ratio {ratio:.2f}")
    return Verdict(tuple(failed), "; ".join(details), round(sim, 4))
