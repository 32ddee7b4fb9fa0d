"""SFT data: synthesized traces -> prompt/completion pairs in trl's conversational format.

The input is ``traces.jsonl`` written by ``openrft synthesize``, one line per sample::

    {"id", "sample": Sample.to_dict(), "traces": [{"text", "extracted"}, ...],
     "attempts", "correct", "pass_rate", "fallback": bool, "teacher"}

Each trace becomes one example whose prompt is ``task.messages(sample, examples)`` (the
same prompt every stage uses) and whose completion is the trace as the assistant turn.
Fallback records carry the bare answer (``task.render_answer``) as their trace; they can
be kept or dropped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrft.data.sample import DataError, Sample
from openrft.core.rundir import StageInputError
from openrft.tasks import Task, task_for

logger = logging.getLogger(__name__)

TRACES = "traces.jsonl"
PRODUCER = "openrft synthesize"
ExamplesFor = Callable[[Sample], Sequence[Sample]]


@dataclass(frozen=True)
class SFTExample:
    """One training pair: a sample and one reasoning trace (or bare answer) for it."""

    sample: Sample
    trace: str
    fallback: bool = False
    line: int = 0  # 1-based line of the traces file it came from


@dataclass
class LoadReport:
    """What :func:`load_sft_examples` found in a traces file."""

    path: str = ""
    lines: int = 0
    records: int = 0
    malformed: list[str] = field(default_factory=list)  # "line N: why"
    fallback_records: int = 0
    excluded_fallback: int = 0
    examples: int = 0

    def as_stats(self) -> dict[str, int]:
        return {"records": self.records, "malformed_lines": len(self.malformed),
                "fallback_records": self.fallback_records, "excluded_fallback": self.excluded_fallback,
                "examples": self.examples}


def _parse_record(line: str) -> tuple[Sample, list[str], bool, str]:
    """``(sample, trace texts, fallback, id)`` of one traces.jsonl line; ``ValueError`` says what is wrong."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg})") from None
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    if not isinstance(rec.get("sample"), dict):
        raise ValueError("field 'sample' is missing or not an object")
    try:
        sample = Sample.from_dict(rec["sample"])
    except (DataError, TypeError) as err:
        raise ValueError(f"field 'sample': {err}") from None
    traces = rec.get("traces")
    if not isinstance(traces, list):
        raise ValueError("field 'traces' is missing or not a list")
    texts = []
    for i, t in enumerate(traces):
        text = t.get("text") if isinstance(t, dict) else t if isinstance(t, str) else None
        if not isinstance(text, str):
            raise ValueError(f"field 'traces[{i}].text' is missing or not a string")
        texts.append(text)
    fallback = rec.get("fallback", False)
    if not isinstance(fallback, bool):
        raise ValueError(f"field 'fallback' must be true or false, got {fallback!r}")
    return sample, texts, fallback, str(rec.get("id", sample.id))


def load_sft_examples(
    traces_path: str | os.PathLike,
    include_fallback: bool = True,
    *,
    max_traces_per_sample: int | None = None,
    report: LoadReport | None = None,
) -> list[SFTExample]:
    """Read ``traces.jsonl`` into :class:`SFTExample` s, one per distinct non-empty trace.

    Malformed lines (bad JSON, a torn last line, a bad ``sample``) are skipped with a
    warning naming the line; a sample id seen twice keeps its last record. A file that
    yields no usable example raises :class:`~openrft.core.rundir.StageInputError`
    naming the file, the cause, and the stage that writes it. ``traces_path`` may also be
    the synthesize stage directory holding ``traces.jsonl``.
    """
    path = Path(traces_path)
    if path.is_dir() and (path / TRACES).is_file():
        path = path / TRACES
    rep = report if report is not None else LoadReport()
    rep.path = str(path)
    if not path.is_file():
        what = "is a directory without traces.jsonl" if path.is_dir() else "does not exist"
        raise StageInputError(
            f"traces file {path} {what}. SFT trains on the traces.jsonl written by '{PRODUCER}'; "
            "run that stage first (or point --traces at its output)."
        )
    by_id: dict[str, tuple[int, Sample, list[str], bool]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rep.lines += 1
        try:
            sample, texts, fallback, rid = _parse_record(line)
        except ValueError as err:
            rep.malformed.append(f"line {lineno}: {err}")
            continue
        by_id[rid] = (lineno, sample, texts, fallback)
    if rep.malformed:
        logger.warning("%s: skipped %d malformed line(s), first: %s", path, len(rep.malformed), rep.malformed[0])
    rep.records = len(by_id)
    examples: list[SFTExample] = []
    for lineno, sample, texts, fallback in by_id.values():
        rep.fallback_records += fallback
        if fallback and not include_fallback:
            rep.excluded_fallback += 1
            continue
        kept: list[str] = []
        for text in texts:
            if text.strip() and text not in kept:
                kept.append(text)
        for text in kept[:max_traces_per_sample]:
            examples.append(SFTExample(sample=sample, trace=text, fallback=fallback, line=lineno))
    rep.examples = len(examples)
    if not examples:
        raise StageInputError(f"{path}: no usable traces for SFT: {_cause(rep)}. This file should be written by "
                              f"'{PRODUCER}'; rerun that stage or check which file --traces points at.")
    return examples


def _cause(rep: LoadReport) -> str:
    if rep.lines == 0:
        return "the file is empty"
    if rep.records == 0:
        return f"all {rep.lines} line(s) are malformed (first: {rep.malformed[0]})"
    if rep.excluded_fallback == rep.records:
        return (f"all {rep.records} record(s) are bare-answer fallbacks and fallbacks are excluded "
                "(keep them with include_fallback=True / --include-fallback)")
    return f"the {rep.records} record(s) hold no non-empty trace text"


def to_rows(examples: Sequence[SFTExample], examples_for: ExamplesFor | None = None,
            task: Task | None = None) -> list[dict[str, Any]]:
    """Conversational prompt-completion rows: ``prompt`` = the task's chat messages (few-shot examples from
    ``examples_for(sample)`` when given), ``completion`` = the trace as the assistant turn."""
    rows = []
    for ex in examples:
        t = task or task_for(ex.sample)
        shots = list(examples_for(ex.sample)) if examples_for is not None else []
        rows.append({
            "prompt": t.messages(ex.sample, shots),
            "completion": [{"role": "assistant", "content": ex.trace}],
        })
    return rows


def build_dataset(examples: Sequence[SFTExample], examples_for: ExamplesFor | None = None, task: Task | None = None):
    """A ``datasets.Dataset`` with ``prompt`` and ``completion`` columns (trl's conversational prompt-completion)."""
    from datasets import Dataset

    return Dataset.from_list(to_rows(examples, examples_for, task))


def _ids(out) -> list[int]:
    return list(out["input_ids"] if hasattr(out, "keys") else out)


def tokenize_prompt_completion(tokenizer, prompt: list[dict], completion: list[dict],
                               max_length: int | None = None) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` the way trl's SFTTrainer builds them: prompt tokens (through the generation
    prompt) masked to -100, the completion (closing end-of-turn token included) as labels."""
    prompt_ids = _ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
    full = _ids(tokenizer.apply_chat_template(list(prompt) + list(completion), tokenize=True))
    n = 0
    while n < min(len(prompt_ids), len(full)) and prompt_ids[n] == full[n]:
        n += 1
    labels = [-100] * n + full[n:]
    if max_length is not None:
        full, labels = full[:max_length], labels[:max_length]
    return full, labels
