"""Record -> :class:`Sample` conversion: field maps, choices, gold letters, numbers, layouts.

A *layout* says what one source record looks like: ``sciknoweval``, ``gsm8k``,
``svamp``, ``reft`` (the ReFT release's records), ``samples`` (``Sample.to_dict``
records) or ``generic`` (any record read through a :class:`FieldMap`). Each converter
takes ``(loc, record, context, index)``, where ``loc`` ("file:line") prefixes every
:class:`DataError` with the field at fault.
:mod:`openrft.data.loaders` reads the containers and calls these.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from openrft.data.sample import ANSWER_TYPES, LETTERS, DataError, Sample

LAYOUTS = ("generic", "samples", "sciknoweval", "gsm8k", "svamp", "reft")
_SAMPLE_FIELDS = frozenset(f.name for f in fields(Sample))
_MISSING: Any = object()
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(,\d{3})+(\.\d+)?")


@dataclass(frozen=True)
class FieldMap:
    """Where each :class:`Sample` field lives in a source record.

    Names may be dotted paths into nested records (``"details.task"``); a column whose
    literal name contains the dot wins. ``choices`` is one column holding a list, a
    ``{"text": [...], "label": [...]}`` dict (options are sorted by label) or a JSON
    string of either, or a tuple of columns holding one option each. ``id``,
    ``answer_type`` and ``task`` are optional: when the column is absent the id is
    ``<file stem>/<index>``, the type is ``mcq`` with choices and ``text`` without, and
    the task is the file stem.

    >>> FieldMap(question="problem", choices=("A", "B", "C", "D")).choices
    ('A', 'B', 'C', 'D')
    """

    question: str = "question"
    answer: str = "answer"
    choices: str | tuple[str, ...] | None = "choices"
    id: str | None = "id"
    answer_type: str | None = "answer_type"
    task: str | None = "task"
    meta: tuple[str, ...] | None = None  # columns copied into meta; None: every unmapped column

    def mapped(self) -> set[str]:
        cols = [self.question, self.answer, self.id, self.answer_type, self.task]
        cols += list(self.choices) if isinstance(self.choices, tuple) else [self.choices]
        return {c.split(".")[0] for c in cols if c}


@dataclass(frozen=True)
class Context:
    stem: str
    split: str | None
    task: str | None
    answer_type: str | None
    fm: FieldMap


def data_error(loc: str, field: str | None, msg: str) -> DataError:
    where = f"{loc}: field {field!r}: " if field else f"{loc}: "
    return DataError(where + msg)


def _get(rec: dict[str, Any], path: str | None) -> Any:
    if not path:
        return _MISSING
    if path in rec:
        return rec[path]
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _field_name(col: str | tuple[str, ...] | None) -> str:
    return "+".join(col) if isinstance(col, tuple) else str(col)


def _make_id(name: str, split: str | None, idx: int) -> str:
    """``name/split/index`` (0-based record index), parts repeated or empty left out."""
    return "/".join(dict.fromkeys(p for p in (name, split, str(idx)) if p))


def _present(v: Any) -> bool:
    return v is not _MISSING and v is not None and str(v).strip() != ""


def canonical_number(value: Any) -> str:
    """Canonical string of a number: no thousands commas, no trailing zeros.

    >>> canonical_number(51.0), canonical_number("1,450,000"), canonical_number("-0.50"), canonical_number(" 3/4 ")
    ('51', '1450000', '-0.5', '3/4')
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    if isinstance(value, int | float):
        value = repr(value)
    s = str(value).strip()
    if "/" in s:
        num, _, den = s.partition("/")
        return f"{canonical_number(num)}/{canonical_number(den)}"
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if not _NUMBER.fullmatch(s):
        raise ValueError(f"{value!r} is not a number")
    try:
        d = Decimal(s)
    except InvalidOperation as e:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"{value!r} is not a number") from e
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


# ---- choices and gold -------------------------------------------------------------


def _label_key(label: str) -> tuple[int, int | str]:
    return (0, int(label)) if label.isdigit() else (1, label.upper())


def _choices(loc: str, rec: dict[str, Any], fm: FieldMap) -> tuple[list[str] | None, list[str] | None]:
    """Option texts in order, and the names the gold may use for them (labels or column names).

    ``(None, None)`` when the record has no choices; a present but empty list is an error."""
    texts, names = _raw_choices(loc, rec, fm)
    if texts is not None and not texts:
        raise data_error(loc, _field_name(fm.choices), "choices are empty; give at least one option or leave the field out")
    return texts, names


def _raw_choices(loc: str, rec: dict[str, Any], fm: FieldMap) -> tuple[list[str] | None, list[str] | None]:
    if isinstance(fm.choices, tuple):
        texts, names = [], []
        if all(_get(rec, col) is _MISSING for col in fm.choices):
            return None, None
        for col in fm.choices:
            v = _get(rec, col)
            if _present(v):
                texts.append(str(v).strip() if isinstance(v, str) else str(v))
                names.append(col)
        return texts, names
    raw = _get(rec, fm.choices)
    if raw is _MISSING or raw is None:
        return None, None
    if isinstance(raw, str) and raw.strip()[:1] in "[{":
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise data_error(loc, fm.choices, f"malformed JSON in choices ({e.msg})") from None
    if isinstance(raw, dict):
        text, label = raw.get("text"), raw.get("label")
        if not isinstance(text, list | tuple) or not isinstance(label, list | tuple) or len(text) != len(label):
            raise data_error(loc, fm.choices, 'choices dict needs "text" and "label" lists of equal length')
        pairs = sorted(zip([str(x).strip() for x in label], text, strict=True), key=lambda p: _label_key(p[0]))
        if len({p[0].upper() for p in pairs}) != len(pairs):
            raise data_error(loc, fm.choices, f"repeated choice labels {[p[0] for p in pairs]}")
        return [_option(loc, fm.choices, t, i) for i, (_, t) in enumerate(pairs)], [p[0] for p in pairs]
    if isinstance(raw, list | tuple) or type(raw).__name__ == "ndarray":
        return [_option(loc, fm.choices, t, i) for i, t in enumerate(raw)], None
    raise data_error(loc, fm.choices, f"choices must be a list or a text/label dict, got {type(raw).__name__}")


def _option(loc: str, field: Any, text: Any, i: int) -> str:
    if text is None or str(text).strip() == "":
        raise data_error(loc, field, f"choice {i} is empty")
    return str(text)


def _gold_letter(loc: str, field: str, gold: Any, choices: list[str], names: list[str] | None) -> str:
    """The letter of the gold option: by label/column name, 0-based int index, letter, or exact option text."""
    n = len(choices)
    g = str(gold).strip()
    if names:
        hits = [i for i, name in enumerate(names) if name.upper() == g.upper()]
        if len(hits) == 1:
            return LETTERS[hits[0]]
    if isinstance(gold, int) and not isinstance(gold, bool) and 0 <= gold < n:
        return LETTERS[gold]
    letter = g.upper().strip("() .")
    if len(letter) == 1 and letter in LETTERS[:n] and (not names or all(len(x) != 1 for x in names)):
        return letter
    hits = [i for i, c in enumerate(choices) if c.strip() == g]
    if len(hits) == 1:
        return LETTERS[hits[0]]
    valid = ", ".join(names or LETTERS[:n])
    raise data_error(loc, field, f"gold answer {gold!r} is not among the choices ({valid})")


# ---- record -> Sample ------------------------------------------------------------


def _make(loc: str, rec: dict[str, Any], ctx: Context, idx: int, *, fm: FieldMap | None = None,
          answer_type: str | None = None, sid: str | None = None, meta: dict[str, Any] | None = None,
          task: str | None = None) -> Sample:
    fm = fm or ctx.fm
    q = _get(rec, fm.question)
    if not isinstance(q, str) or not q.strip():
        raise data_error(loc, fm.question, "question is missing or empty")
    gold = _get(rec, fm.answer)
    if not _present(gold):
        raise data_error(loc, fm.answer, "answer is missing or empty")
    choices, names = _choices(loc, rec, fm)
    at_field = fm.answer_type or "answer_type"
    at = ctx.answer_type or answer_type
    if at is None:
        v = _get(rec, fm.answer_type)
        at = str(v).strip() if _present(v) else ("mcq" if choices else "text")
        if at not in ANSWER_TYPES:
            raise data_error(loc, at_field, f"unknown answer type {at!r}; valid: {', '.join(ANSWER_TYPES)}")
    if at == "mcq":
        if not choices:
            raise data_error(loc, _field_name(fm.choices), "multiple-choice record with missing or empty choices")
        gold = _gold_letter(loc, fm.answer, gold, choices, names)
    elif at == "numeric":
        try:
            gold = canonical_number(gold)
        except ValueError as e:
            raise data_error(loc, fm.answer, f"{e}; a numeric answer must be a plain number") from None
    if sid is None:
        v = _get(rec, fm.id)
        sid = str(v).strip() if _present(v) else _make_id(ctx.stem, ctx.split, idx)
    if task is None:
        v = _get(rec, fm.task)
        task = ctx.task or (str(v) if _present(v) else ctx.stem)
    if meta is None:
        keep = fm.meta if fm.meta is not None else [k for k in rec if k not in fm.mapped()]
        meta = {k: rec[k] for k in keep if k in rec}
    try:
        return Sample(id=sid, task=task, question=q, answer=str(gold), answer_type=at,  # type: ignore[arg-type]
                      choices=tuple(choices) if choices else None, meta=meta)
    except DataError as e:
        raise DataError(f"{loc}: {e}") from None


_SKE = FieldMap(question="question", answer="answerKey", choices="choices", id=None, answer_type=None, task=None)


def _sciknoweval(loc: str, rec: dict[str, Any], ctx: Context, idx: int) -> Sample:
    """SciKnowEval MCQ. Known source defects are tolerated and noted in ``meta["defects"]``: more option
    texts than labels (texts beyond the labels are dropped, as ``zip(label, text)`` renders them) and
    repeated option texts."""
    details = rec.get("details") if isinstance(rec.get("details"), dict) else {}
    meta: dict[str, Any] = {"domain": rec.get("domain"), "subtask": details.get("subtask"),
                            "source": details.get("source"), "level": details.get("level"),
                            "source_task": details.get("task"), "split": ctx.split}
    defects = []
    ch = rec.get("choices")
    if isinstance(ch, dict) and isinstance(ch.get("text"), list) and isinstance(ch.get("label"), list):
        n_text, n_label = len(ch["text"]), len(ch["label"])
        if n_text > n_label > 0:
            defects.append(f"choices.text has {n_text} entries for {n_label} labels; kept the first {n_label}")
            rec = {**rec, "choices": {**ch, "text": ch["text"][:n_label]}}
    task = ctx.task or ctx.stem
    sid = _make_id(task, ctx.split, idx)
    s = _make(loc, rec, ctx, idx, fm=_SKE, answer_type="mcq", sid=sid, task=task, meta=meta)
    if s.choices and len(set(s.choices)) < len(s.choices):
        defects.append("repeated option texts")
    if defects:
        meta["defects"] = defects
    return s


def _gsm8k(loc: str, rec: dict[str, Any], ctx: Context, idx: int) -> Sample:
    sol = rec.get("answer")
    if not isinstance(sol, str) or "####" not in sol:
        raise data_error(loc, "answer", "GSM8K answer needs a final line '#### <number>'")
    body, _, final = sol.rpartition("####")
    try:
        gold = canonical_number(final.strip())
    except ValueError as e:
        raise data_error(loc, "answer", f"final '####' line: {e}") from None
    rationale = re.sub(r"<<[^>]*>>", "", body).strip()
    task = ctx.task or "gsm8k"
    sid = _make_id(task, ctx.split, idx)
    rec = {**rec, "answer": gold}
    fm = FieldMap(choices=None, id=None, answer_type=None, task=None)
    return _make(loc, rec, ctx, idx, fm=fm, answer_type="numeric", sid=sid, task=task, meta={"rationale": rationale})


def _svamp(loc: str, rec: dict[str, Any], ctx: Context, idx: int) -> Sample:
    for f in ("Body", "Question"):
        if not isinstance(rec.get(f), str) or not rec[f].strip():
            raise data_error(loc, f, f"{f} is missing or empty")
    q = rec["Body"].strip() + " " + rec["Question"].strip()
    task = ctx.task or "svamp"
    sid = f"{task}/{rec['ID']}" if _present(rec.get("ID")) else f"{task}/{idx}"
    fm = FieldMap(question="q", answer="Answer", choices=None, id=None, answer_type=None, task=None)
    meta = {"equation": rec.get("Equation"), "type": rec.get("Type"), "source_id": rec.get("ID")}
    return _make(loc, {**rec, "q": q}, ctx, idx, fm=fm, answer_type="numeric", sid=sid, task=task, meta=meta)


_REFT_FM = FieldMap(question="question", answer="answer_value", choices="choices", id=None, answer_type=None,
                    task=None)
_REFT_FINAL = re.compile(r"\s*(?:Therefore,\s*)?the answer is\s*<([^<>]*)>\.?\s*$", re.I)
_REFT_NO_SOLUTION = re.compile(r"already (?:been )?answered|duplicate|repeat of a previous", re.I)
_OPTION = re.compile(r"([a-z]) \)\s*(.*)", re.S)


def split_inline_options(question: str) -> tuple[str, list[str]] | None:
    """The stem and option texts of a question whose last line lists lettered options (MathQA, as ReFT ships it):
    ``a ) 38 , b ) 27.675 , ...`` or a Python list ``['a ) 12', 'b ) 15', ...]``; ``None`` without such a line.

    >>> split_inline_options("x + 1 = 3 . x ?\\na ) 2 , b ) f ( 1 , 2 ) , c ) 4")
    ('x + 1 = 3 . x ?', ['2', 'f ( 1 , 2 )', '4'])
    >>> split_inline_options("x ?\\n['a ) 1 cm', 'b ) 3 cm']"), split_inline_options("no options")
    (('x ?', ['1 cm', '3 cm']), None)
    """
    stem, _, line = question.rpartition("\n")
    line = line.strip()
    if line.startswith("["):
        try:
            parts = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            return None
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            return None
    else:  # a comma before "x ) " may sit inside an option; only the next letter in order starts one
        parts = re.split(r"\s*,\s*(?=[a-z] \) )", line)
    texts: list[str] = []
    for part in parts:
        m = _OPTION.fullmatch(part.strip())
        if m and m[1] == chr(ord("a") + len(texts)):
            texts.append(m[2].strip())
        elif texts:
            texts[-1] += f" , {part.strip()}"
        else:
            return None
    return (stem.strip(), texts) if stem.strip() and len(texts) >= 2 else None


def _reft_rationale(cot: str, gold: str, defects: list[str]) -> str | None:
    """An N-CoT rationale without its closing "the answer is <x>" (the task adds its own answer line)."""
    m = _REFT_FINAL.search(cot)
    body = cot[: m.start()].strip() if m else cot.strip()
    if _REFT_NO_SOLUTION.search(body) and len(body) < 200:
        defects.append("answer_cot refers to another question's answer instead of solving this one; not used")
        return None
    if m:
        try:
            stated, want = Fraction(canonical_number(m[1].strip().removesuffix("%").strip())), Fraction(gold)
            same = abs(stated - want) <= Fraction(1, 10**6) * max(abs(stated), abs(want))  # float noise only
        except (ValueError, ZeroDivisionError):
            same = False
        if not same:
            defects.append(f"answer_cot concludes <{m[1]}>; the gold answer is {gold}")
    return body or None


#: ReFT's own grading of numbers (its train_rl_reft.py: ``abs(extracted - target) <= 1e-2``), kept with each of
#: its numeric and program samples (``meta["grading"]``), which the numeric and program graders honour
REFT_GRADING = {"abs_tol": 1e-2}


def _reft(loc: str, rec: dict[str, Any], ctx: Context, idx: int) -> Sample:
    """The ReFT release (``item_id``, ``question``, ``answer_value``, in training files ``answer_cot``): a
    ``def solution()`` program goes to ``meta["program"]`` (P-CoT), prose to ``meta["rationale"]`` (N-CoT); a
    letter gold with options inline in the question is multiple choice. Defects: ``meta["defects"]``."""
    for f in ("item_id", "question", "answer_value"):
        if not _present(rec.get(f)) or not isinstance(rec[f], str):
            raise data_error(loc, f, f"{f} is missing or not a string")
    gold, cot = rec["answer_value"].strip(), rec.get("answer_cot")
    options = split_inline_options(rec["question"])
    at = ctx.answer_type or ("mcq" if options and re.fullmatch(r"[a-z]", gold) else
                             "program" if isinstance(cot, str) and "def solution(" in cot else "numeric")
    defects: list[str] = []
    meta: dict[str, Any] = {"item_id": rec["item_id"]}
    rec = {**rec}
    if at == "mcq":
        if options is None:
            raise data_error(loc, "question", "multiple choice needs options on the last line ('a ) .. , b ) ..')")
        rec["question"], texts = options
        doubled = [i for i, t in enumerate(texts) if t.startswith(f"{chr(ord('a') + i)} ) ")]
        if doubled:
            defects.append(f"options {', '.join(chr(ord('a') + i) for i in doubled)} repeat their label "
                           "('a ) a ) ..'); the repeat is dropped")
        rec["choices"] = choices = [t[4:].strip() if i in doubled else t for i, t in enumerate(texts)]
        if len(set(choices)) < len(choices):
            defects.append("repeated option texts")
    elif at in ("numeric", "program"):
        try:
            rec["answer_value"] = gold = canonical_number(gold)
        except ValueError as e:
            raise data_error(loc, "answer_value", f"{e}; a {at} answer must be a plain number") from None
        meta["grading"] = dict(REFT_GRADING)  # some golds are rounded (3.333 for 10 / 3): graded as ReFT grades
    if isinstance(cot, str) and cot.strip():
        if "def solution(" in cot:
            meta["program"] = cot
        elif (rationale := _reft_rationale(cot, gold, defects)) is not None:
            meta["rationale"] = rationale
    if defects:
        meta["defects"] = defects
    task = ctx.task or re.sub(r"_\d+$", "", rec["item_id"])
    return _make(loc, rec, ctx, idx, fm=_REFT_FM, answer_type=at, sid=f"{task}/{rec['item_id']}", task=task,
                 meta=meta)


def _samples(loc: str, rec: dict[str, Any], ctx: Context, idx: int) -> Sample:
    d = {k: v for k, v in rec.items() if v is not None or k in ("choices", "meta")}
    for k in ("choices", "meta"):
        if isinstance(d.get(k), str):
            try:
                d[k] = json.loads(d[k]) if d[k].strip() else None
            except json.JSONDecodeError as e:
                raise data_error(loc, k, f"malformed JSON ({e.msg})") from None
    if d.get("meta") is None:
        d["meta"] = {}
    if ctx.task:
        d["task"] = ctx.task
    try:
        return Sample.from_dict(d)
    except (DataError, TypeError) as e:
        raise DataError(f"{loc}: {e}") from None


def _generic(loc: str, rec: dict[str, Any], ctx: Context, idx: int) -> Sample:
    return _make(loc, rec, ctx, idx)


CONVERTERS = {"generic": _generic, "samples": _samples, "sciknoweval": _sciknoweval, "gsm8k": _gsm8k, "svamp": _svamp,
              "reft": _reft}


def sniff_layout(rec: dict[str, Any]) -> str:
    """Guess a record's layout from its keys.

    >>> sniff_layout({"Body": "..", "Question": "..", "Answer": 3.0})
    'svamp'
    >>> sniff_layout({"question": "..", "answer": "x = 2\\n#### 2"})
    'gsm8k'
    >>> sniff_layout({"item_id": "svamp_1", "question": "..", "answer_value": "208.0"})
    'reft'
    """
    keys = set(rec)
    if {"question", "choices", "answerKey"} <= keys:
        return "sciknoweval"
    if {"Body", "Question", "Answer"} <= keys:
        return "svamp"
    if {"id", "task", "question", "answer"} <= keys and keys <= _SAMPLE_FIELDS:
        return "samples"
    if {"question", "answer"} <= keys and isinstance(rec["answer"], str) and "\n####" in rec["answer"]:
        return "gsm8k"
    if {"item_id", "question", "answer_value"} <= keys:
        return "reft"
    return "generic"
