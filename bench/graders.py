"""Grader agreement: the answer extractors against gold answers and hand-checked traces.

Rows (each measured in this run):
- ``gsm8k test``: every GSM8K test rationale (ends ``#### n``) must extract to ``n``;
- ``gsm8k test, no ####``: the same rationales with the ``#### n`` line removed, which
  exercises the fallback (last number of the text) a model without the format relies on;
- ``traces/<type>``: ``tests/tasks/traces.jsonl``, real SmolLM2-135M outputs and
  hand-written reasoning traces with the answer a human reads in them (``null`` = none).

Columns: count, agreement (extracted == expected), false positives (graded correct although
the expected answer is no answer or a wrong one), false negatives, and microseconds per
extraction.

    python bench/graders.py
    python bench/graders.py --gsm8k path/to/test.jsonl --traces path/to/traces.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterable
from pathlib import Path

import openrft
from openrft.data.sample import Sample
from openrft.tasks import task_for

ROOT = Path(__file__).resolve().parents[1]
GSM8K = (
    Path(openrft.__file__).parent / "data" / "bundled" / "gsm8k" / "test.jsonl",
    ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl",
)
TRACES = ROOT / "tests" / "tasks" / "traces.jsonl"


def gsm8k_cases(path: Path, drop_hashes: bool) -> list[tuple[str, Sample, str | None]]:
    cases = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        rec = json.loads(line)
        rationale = rec.get("answer") if "####" in (rec.get("answer") or "") else rec["meta"]["rationale"]
        gold = rationale.rsplit("####", 1)[1].strip().replace(",", "")
        if drop_hashes:
            rationale = re.sub(r"\s*####[^\n]*\s*$", "", rationale)
        sample = Sample(id=f"gsm8k-{i}", task="gsm8k", question=rec.get("question") or "?", answer=gold, answer_type="numeric")
        cases.append((rationale, sample, gold))
    return cases


def trace_cases(path: Path) -> dict[str, list[tuple[str, Sample, str | None]]]:
    groups: dict[str, list[tuple[str, Sample, str | None]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        sample = Sample(id=rec["id"], task="traces", question="?", choices=rec.get("choices"),
                        answer=rec["gold"], answer_type=rec["answer_type"])
        groups.setdefault(rec["answer_type"], []).append((rec["completion"], sample, rec["expected"]))
    return groups


def measure(cases: Iterable[tuple[str, Sample, str | None]]) -> dict[str, float]:
    n = agree = false_pos = false_neg = 0
    seconds = 0.0
    for completion, sample, expected in cases:
        task = task_for(sample)
        start = time.perf_counter()
        grade = task.grade(completion, sample)
        seconds += time.perf_counter() - start
        should_be_correct = expected is not None and task.is_equivalent(expected, sample)
        n += 1
        agree += grade.extracted == expected
        false_pos += grade.correct and not should_be_correct
        false_neg += should_be_correct and not grade.correct
    return {"count": n, "agreement_pct": 100.0 * agree / max(n, 1), "false_positives": false_pos,
            "false_negatives": false_neg, "us_per_item": 1e6 * seconds / max(n, 1)}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gsm8k", type=Path, default=None, help="GSM8K test JSONL (default: bundled, then ../shared)")
    ap.add_argument("--traces", type=Path, default=TRACES, help="traces JSONL (id, answer_type, choices, gold, expected, completion)")
    args = ap.parse_args(argv)

    rows: dict[str, dict[str, float]] = {}
    gsm8k = args.gsm8k or next((p for p in GSM8K if p.is_file()), None)
    if gsm8k is not None and gsm8k.is_file():
        rows["gsm8k test"] = measure(gsm8k_cases(gsm8k, drop_hashes=False))
        rows["gsm8k test, no ####"] = measure(gsm8k_cases(gsm8k, drop_hashes=True))
    else:
        print("GSM8K test data not found; pass --gsm8k")
    groups = trace_cases(args.traces)
    for kind, cases in sorted(groups.items()):
        rows[f"traces/{kind}"] = measure(cases)
    rows["traces/all"] = measure(c for cases in groups.values() for c in cases)

    print(f"{'set':<22}{'count':>7}{'agree %':>9}{'false +':>9}{'false -':>9}{'us/item':>9}")
    for name, r in rows.items():
        print(f"{name:<22}{r['count']:>7}{r['agreement_pct']:>9.2f}{r['false_positives']:>9}"
              f"{r['false_negatives']:>9}{r['us_per_item']:>9.1f}")
    return rows


if __name__ == "__main__":
    main()
