"""``write_run_report``: ``report.md`` and ``report.html`` (+ ``plots/*.png``) for one run directory."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openrft.evaluate.runner import EvalResult
from openrft.core.rundir import atomic_write_text
from openrft.report import plots
from openrft.report.document import Block, Facts, Heading, Image, Para, Table, render_html, render_markdown
from openrft.report.run import Cell, Run, load_run
from openrft.report.tables import (
    accuracy_blocks, example_blocks, pick_examples, prm_quality_blocks, results_by_size, stage_time_table,
)

logger = logging.getLogger(__name__)

__all__ = ["PLOTS_DIR", "QuestionLookup", "run_report_blocks", "write_run_report"]

PLOTS_DIR = "plots"
_PLOT_ERRORS = (ValueError, TypeError, OverflowError, KeyError)


class QuestionLookup:
    """A completion record's question: its own ``question`` field when stored, else the cell task's test split.

    The split (and answer type) come from the run's resolved ``recipe.yaml`` (``test_split``,
    ``answer_type``); the question is rendered by the sample's task (options included), as the
    model saw it. Datasets are loaded once per task; one that cannot be loaded gives ``None``.
    """

    def __init__(self, run_dir: str | os.PathLike | None = None) -> None:
        self._by_task: dict[str, dict[str, str]] = {}
        self._split, self._kw = "test", {}
        recipe = Path(run_dir) / "recipe.yaml" if run_dir is not None else None
        if recipe is not None and recipe.is_file():
            import yaml

            try:
                data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                data = None
            if isinstance(data, dict):
                self._split = str(data.get("test_split") or "test")
                if data.get("answer_type"):
                    self._kw = {"answer_type": data["answer_type"]}

    def __call__(self, cell: Cell, record: dict[str, Any]) -> str | None:
        if isinstance(record.get("question"), str):
            return record["question"]
        if cell.task not in self._by_task:
            self._by_task[cell.task] = self._load(cell.task)
        return self._by_task[cell.task].get(str(record.get("id")))

    def _load(self, task: str) -> dict[str, str]:
        from openrft.data.loaders import load_sources
        from openrft.data.sample import DataError
        from openrft.tasks import task_for

        try:
            samples = load_sources([task], split=self._split, **self._kw)
        except (DataError, OSError, ValueError) as err:
            logger.info("report: no questions for %s (%s)", task, err)
            return {}
        return {s.id: task_for(s).render_question(s) for s in samples}


def _plot_blocks(run: Run, results: list[tuple[int | None, EvalResult]], out_dir: Path,
                 notes: list[str]) -> list[Block]:
    """Draw every plot the run's data allows; image blocks point at ``plots/*.png`` relative to the report."""
    blocks: list[Block] = [Heading(2, "Plots")]
    if not plots.have_matplotlib():
        return blocks + [Para("Plots skipped: matplotlib is not installed ("
                              "pip install matplotlib, then run 'openrft report' again).")]
    drawn: list[tuple[str, str]] = []  # (file name, alt text)

    def draw(name: str, alt: str, make: Callable[[Path], Path]) -> None:
        try:
            make(out_dir / PLOTS_DIR / name)
        except _PLOT_ERRORS as err:
            notes.append(f"plot {name} failed: {type(err).__name__}: {err}")
            return
        drawn.append((name, alt))

    tasks = list(dict.fromkeys(t.task for _, r in results for t in r.tasks))
    if len(tasks) > 1:
        series = {r.label: {t.task: (t.accuracy, t.accuracy_std) for t in r.tasks} for _, r in results}
        draw("accuracy_per_task.png", "accuracy per task", lambda p: plots.task_bars(series, p))
    sized = sorted(((s, r) for s, r in results if s is not None), key=lambda x: x[0])
    if len(sized) > 1:
        curves: dict[str, list[tuple[float, float] | None]] = {}
        for task in tasks:
            curves[task] = [next(((t.accuracy, t.accuracy_std) for t in r.tasks if t.task == task), None)
                            for _, r in sized]
        if len(tasks) > 1:
            # Avg only where every task is evaluated, so that the points compare like with like
            curves["Avg"] = [(r.average, 0.0) if len(r.tasks) == len(tasks) else None for _, r in sized]
        draw("accuracy_vs_data_size.png", "accuracy vs number of training samples",
             lambda p: plots.accuracy_vs_size([s for s, _ in sized], curves, p))
    for cell in run.cells:
        rows = cell.rl_metrics()
        if rows:
            alt = f"RL curves, cell {cell.id}"
            draw(f"{plots.safe_name(cell.id)}-rl.png", alt, lambda p: plots.rl_curves(rows, p, alt))
        quality = cell.prm_quality()
        if quality:
            alt = f"PRM quality, cell {cell.id}"
            draw(f"{plots.safe_name(cell.id)}-prm_quality.png", alt, lambda p: plots.prm_quality(quality, p, alt))
        losses = cell.sft_losses()
        if losses:
            alt = f"SFT loss, cell {cell.id}"
            draw(f"{plots.safe_name(cell.id)}-sft_loss.png", alt, lambda p: plots.sft_loss(losses, p, alt))
    if not drawn:
        return blocks + [Para("Nothing to plot yet (no RL or SFT metrics, and a single task and data size).")]
    return blocks + [Image(f"{PLOTS_DIR}/{name}", alt) for name, alt in drawn]


def run_report_blocks(run: Run, out_dir: Path, examples: int = 3) -> list[Block]:
    """The whole report of ``run`` as blocks; draws the plots into ``out_dir/plots`` on the way."""
    notes: list[str] = []
    blocks: list[Block] = [
        Heading(1, f"openrft run: {run.name}"),
        Facts([("method", run.method), ("recipe", run.recipe), ("status", run.status),
               ("stages", ", ".join(run.stages)), ("cells", str(len(run.cells))),
               ("openrft", run.openrft_version or "unknown"), ("run directory", str(run.path))]),
    ]
    if run.status != "finished":
        blocks.append(Para(f"This run is {run.status}: the report shows what its stages have written so far."))
    blocks += [Heading(2, "Wall time per stage"), Table(*stage_time_table(run))]
    results = results_by_size(run, notes)
    blocks += accuracy_blocks([r for _, r in results], [c for c in run.cells if not c.evaluated])
    blocks += prm_quality_blocks(run.cells)
    blocks += _plot_blocks(run, results, out_dir, notes)
    if examples > 0:
        blocks += example_blocks(pick_examples(run.cells, examples), QuestionLookup(run.path))
    if notes:
        blocks += [Heading(2, "Notes")] + [Para(n) for n in notes]
    return blocks


def write_run_report(run_dir: str | os.PathLike, examples: int = 3) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` (and ``plots/*.png``) into ``run_dir``; returns both paths.

    Raises :class:`~openrft.report.run.RunDirError` or
    :class:`~openrft.core.rundir.IncompatibleRunError` for a path that is not a readable run.
    """
    run = load_run(run_dir)
    out = Path(run_dir)
    blocks = run_report_blocks(run, out, examples)
    md = atomic_write_text(out / "report.md", render_markdown(blocks))
    page = atomic_write_text(out / "report.html", render_html(blocks, f"openrft run {run.name}"))
    return md, page
