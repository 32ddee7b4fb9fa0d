"""Helpers of the SFT tests: short synthetic samples and traces.jsonl files in the synthesize format.

A module with its own name (not conftest) so test files import it unambiguously whichever test folders
one pytest call collects.
"""

from __future__ import annotations

import json

from openrft.data.sample import Sample
from openrft.tasks import task_for


def short_samples(n: int = 8) -> list[Sample]:
    """Small-number addition questions with four options: short prompts keep the tiny-model tests fast."""
    out = []
    for i in range(n):
        a, b = i + 2, i + 3
        right = a + b
        choices = [str(right + d) for d in (0, 1, -1, 2)]
        order = [(i + k) % 4 for k in range(4)]
        opts = [choices[k] for k in order]
        out.append(Sample(id=f"add/{i}", task="add", question=f"What is {a} + {b}?", choices=tuple(opts),
                          answer="ABCD"[opts.index(str(right))], answer_type="mcq"))
    return out


def trace_for(sample: Sample) -> str:
    a, b = sample.question.removeprefix("What is ").removesuffix("?").split(" + ")
    return f"{a} plus {b} is {int(a) + int(b)}. {task_for(sample).render_answer(sample)}"


def record(sample: Sample, traces: list[str], fallback: bool = False) -> dict:
    return {"id": sample.id, "sample": sample.to_dict(), "traces": [{"text": t, "extracted": sample.answer} for t in traces],
            "attempts": 4, "correct": 0 if fallback else len(traces), "pass_rate": 0.0 if fallback else len(traces) / 4,
            "fallback": fallback, "teacher": None}


def write_traces(path, samples, fallback_ids=(), lines=()):
    """traces.jsonl with one reasoning trace per sample; ids in ``fallback_ids`` get the bare answer instead."""
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            fb = s.id in fallback_ids
            f.write(json.dumps(record(s, [task_for(s).render_answer(s) if fb else trace_for(s)], fb)) + "\n")
        for line in lines:
            f.write(line + "\n")
    return path
