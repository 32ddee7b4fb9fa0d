"""``compare``: a method x task accuracy table over finished runs (OpenRFT Table 1 layout).

Rows are labelled by each run's ``method`` (from ``run.json``); a method run at several
training-set sizes gets one row per size (``SFT (n=25)``). Columns are the evaluated tasks,
then Avg (macro mean over the row's tasks); the best value of each column is marked ``*``.

When several runs give the same method, size and task, the **latest finished** evaluation
wins (the eval stage's manifest finish time; on a tie the run named last on the command
line), and a note names the run used and the ones passed over. Runs that are not finished
are left out with a note; cells without an evaluation leave ``-`` and a note.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from openrft.evaluate.results import accuracy_table, markdown_table
from openrft.evaluate.runner import EvalResult, TaskMetrics
from openrft.report.run import Run, RunDirError, load_run
from openrft.report.tables import row_label

__all__ = ["Comparison", "Entry", "compare", "compare_runs"]


@dataclass(frozen=True)
class Entry:
    """One table value: a task's metrics from one cell of one run."""

    method: str
    data_size: int | None
    run: str
    run_path: str
    cell: str
    metrics: TaskMetrics
    finished_at: float
    order: int  # position of the run on the command line (ties go to the later one)


@dataclass
class Comparison:
    """The comparison table and where each value came from."""

    header: list[str]
    rows: list[list[str]]
    entries: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table in Markdown, with the notes below it."""
        parts = ["# openrft compare", "",
                 "Accuracy (mean over sampled runs) per method and task; Avg = macro mean over the row's tasks; "
                 "* = best of the column.", "", markdown_table(self.header, self.rows), ""]
        if self.notes:
            parts += ["Notes:", ""] + [f"- {n}" for n in self.notes] + [""]
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the table, the notes, and per value its run, cell and metrics."""
        return {"header": self.header, "rows": self.rows, "notes": self.notes,
                "entries": [{"method": e.method, "data_size": e.data_size, "task": e.metrics.task, "run": e.run,
                             "run_dir": e.run_path, "cell": e.cell, "accuracy": e.metrics.accuracy,
                             "accuracy_std": e.metrics.accuracy_std, "maj_at_k": e.metrics.maj_at_k,
                             "pass_at_k": e.metrics.pass_at_k, "k": e.metrics.k,
                             "rerank_at_k": e.metrics.rerank_at_k, "rerank_k": e.metrics.rerank_k,
                             "greedy_accuracy": e.metrics.greedy_accuracy, "items": e.metrics.items}
                            for e in self.entries]}


def _entries(run: Run, order: int, notes: list[str]) -> list[tuple[Entry, EvalResult]]:
    out = []
    for cell in run.cells:
        if not cell.evaluated:
            notes.append(f"{run.name}: cell {cell.id} ({cell.task}) {cell.eval_note or 'not evaluated'}")
            continue
        result = cell.eval_results[0]
        for t in result.tasks:
            out.append((Entry(method=run.method, data_size=cell.data_size, run=run.name, run_path=str(run.path),
                              cell=cell.id, metrics=t, finished_at=cell.eval_finished_at or 0.0, order=order),
                        result))
    return out


def compare_runs(runs: Sequence[Run]) -> Comparison:
    """The comparison over already loaded runs (see the module docstring for the rules)."""
    notes: list[str] = []
    found: list[tuple[Entry, EvalResult]] = []
    for i, run in enumerate(runs):
        if run.status != "finished":
            notes.append(f"{run.name}: left out, its status is {run.status!r} ({run.path})")
            continue
        found += _entries(run, i, notes)
    if not found:
        raise RunDirError("nothing to compare: no finished run with an evaluated cell among "
                          + ", ".join(str(r.path) for r in runs))
    chosen: dict[tuple[str, int | None, str], tuple[Entry, EvalResult]] = {}
    passed_over: dict[tuple[str, int | None, str], list[Entry]] = {}
    for entry, result in found:
        key = (entry.method, entry.data_size, entry.metrics.task)
        old = chosen.get(key)
        if old is None or (entry.finished_at, entry.order) >= (old[0].finished_at, old[0].order):
            if old is not None:
                passed_over.setdefault(key, []).append(old[0])
            chosen[key] = (entry, result)
        else:
            passed_over.setdefault(key, []).append(entry)
    for key, others in passed_over.items():
        used = chosen[key][0]
        notes.append(f"{used.method} / {used.metrics.task}"
                     + (f" (n={used.data_size})" if used.data_size is not None else "")
                     + f": from {used.run} (latest finished); also in "
                     + ", ".join(sorted({o.run for o in others})))
    sizes: dict[str, set[int | None]] = {}
    for method, size, _ in chosen:
        sizes.setdefault(method, set()).add(size)
    row_keys = list(dict.fromkeys((m, s) for m, s, _ in chosen))
    all_tasks = list(dict.fromkeys(t for _, _, t in chosen))
    results = []
    for method, size in row_keys:
        picks = [chosen[(method, size, t)] for t in all_tasks if (method, size, t) in chosen]
        first = picks[0][1]
        label = row_label(method, size, len(sizes[method]) > 1)
        results.append(replace(first, label=label, tasks=[e.metrics for e, _ in picks], records=[]))
        if len(picks) < len(all_tasks):
            notes.append(f"{label}: Avg covers {len(picks)} of {len(all_tasks)} tasks")
    header, rows = accuracy_table(results, with_spread=False)
    return Comparison(header=header, rows=rows, entries=[chosen[k][0] for k in chosen], notes=notes)


def compare(run_dirs: Sequence[str | os.PathLike]) -> Comparison:
    """Load the run directories and compare their finished runs.

    Raises :class:`~openrft.report.run.RunDirError` (or
    :class:`~openrft.core.rundir.IncompatibleRunError`) naming the path at fault.
    """
    if not run_dirs:
        raise RunDirError("no run directory given")
    return compare_runs([load_run(p) for p in run_dirs])
