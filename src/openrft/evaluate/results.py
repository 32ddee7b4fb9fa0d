"""Reports: the OpenRFT Table 1 layout (methods x tasks, Avg) in Markdown, JSON and the console."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from openrft.evaluate.runner import EvalResult


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def accuracy_table(results: Sequence[EvalResult], with_spread: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per result (method), one column per task, then Avg (macro mean over tasks).

    A result evaluated with reranking adds a row ``<label> rerank@k`` (best-of-k by its scorer).
    The best value of each column is marked with ``*`` when several rows are compared.
    """
    tasks: list[str] = []
    for r in results:
        for t in r.tasks:
            if t.task not in tasks:
                tasks.append(t.task)
    header = ["Method", *tasks, "Avg"]
    lines = []  # (label, values, per-task metrics for the spread or None)
    for r in results:
        by_task = {t.task: t for t in r.tasks}
        lines.append((r.label, [by_task[t].accuracy if t in by_task else None for t in tasks] + [r.average], by_task))
        if r.rerank_average is not None:
            k = r.tasks[0].rerank_k
            lines.append((f"{r.label} rerank@{k}", [by_task[t].rerank_at_k if t in by_task else None for t in tasks]
                          + [r.rerank_average], None))
    best = [max((v[c] for _, v, _ in lines if v[c] is not None), default=None) for c in range(len(header) - 1)]
    rows = []
    for label, vals, by_task in lines:
        cells = []
        for c, v in enumerate(vals):
            cell = _pct(v)
            if with_spread and by_task and c < len(tasks) and v is not None and len(by_task[tasks[c]].per_run) > 1:
                cell += f" ±{by_task[tasks[c]].accuracy_std:.3f}"
            if len(lines) > 1 and v is not None and v == best[c]:
                cell += " *"
            cells.append(cell)
        rows.append([label, *cells])
    return header, rows


def detail_table(result: EvalResult) -> tuple[list[str], list[list[str]]]:
    k = result.tasks[0].k if result.tasks else 1
    header = ["Task", "Items", "Acc (mean ± std over runs)", f"maj@{k}", f"pass@{k}", "Answered", "Mean tokens",
              "Truncated"]
    rows = [[t.task, str(t.items), f"{t.accuracy:.3f} ± {t.accuracy_std:.3f}", _pct(t.maj_at_k), _pct(t.pass_at_k),
             f"{t.answered:.2f}", f"{t.mean_tokens:.0f}", f"{t.truncated:.2f}"] for t in result.tasks]
    if result.rerank_average is not None:
        kr = result.tasks[0].rerank_k
        header[5:5] = [f"rerank@{kr}", f"weighted_maj@{kr}"]
        for row, t in zip(rows, result.tasks):
            row[5:5] = [_pct(t.rerank_at_k), _pct(t.weighted_maj_at_k)]
    if any(t.greedy_accuracy is not None for t in result.tasks):
        header[3:3] = ["Greedy"]
        for row, t in zip(rows, result.tasks):
            row[3:3] = [_pct(t.greedy_accuracy)]
    return header, rows


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_report(results: Sequence[EvalResult]) -> str:
    parts = ["# openrft evaluation", "", "## Accuracy (mean over sampled runs)", "",
             markdown_table(*accuracy_table(results)), ""]
    for r in results:
        cfg = r.config
        parts += [f"## {r.label}: {r.model}", "",
                  f"n={cfg['n']}, temperature={cfg['temperature']}, top_p={cfg['top_p']}, "
                  f"max_new_tokens={cfg['max_new_tokens']}, seed={cfg['seed']}; "
                  f"{r.tokens} tokens in {r.seconds:.1f} s ({r.tokens / max(r.seconds, 1e-9):.1f} tok/s)"
                  + (_rerank_note(cfg) if cfg.get("rerank") else ""), "",
                  markdown_table(*detail_table(r)), ""]
    return "\n".join(parts)


def _rerank_note(cfg: dict) -> str:
    note = f"; reranked by {cfg['rerank']}"
    if cfg["rerank"].startswith("prm:"):
        note += f" (steps: {cfg['step_rule']}, agg: {cfg['rerank_agg']})"
    return note


def write_report(results: Sequence[EvalResult], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "report.md", out / "report.json"
    md.write_text(markdown_report(results), encoding="utf-8")
    js.write_text(json.dumps([r.to_dict() for r in results], indent=2), encoding="utf-8")
    return md, js


def print_tables(results: Sequence[EvalResult], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    import sys

    console = console or Console(width=None if sys.stdout.isatty() else 160)

    def show(title, header, rows):
        table = Table(title=title)
        for h in header:
            table.add_column(h, justify="left" if h in ("Method", "Task") else "right")
        for r in rows:
            table.add_row(*r)
        console.print(table)

    show("Accuracy (mean over sampled runs; OpenRFT Table 1 layout)", *accuracy_table(results))
    for r in results:
        show(f"{r.label}: {r.model}", *detail_table(r))
