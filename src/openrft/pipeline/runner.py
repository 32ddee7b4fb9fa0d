"""``openrft run``: a recipe's stages in order, inside ``runs/<name>/``, skipping what is done.

Layout of a run (``run.json`` is what reports and ``openrft compare`` read)::

    runs/<name>/
      run.json        method, recipe, status, cells with per-stage status and wall time
      recipe.yaml     the resolved recipe (after --set, --tasks, --data-sizes)
      <cell>/         one per (task, training-set size): e.g. arithmetic/, chemical_calculation-n25/
        icl/          the few-shot index of the cell's training questions (when icl is set)
        augment/  synthesize/  sft/  prm/  rl/  eval/     each stage's own outputs and manifest.json

Every stage keeps its own manifest: a stage whose settings and inputs match a finished manifest is
skipped, an interrupted one resumes (synthesis, evaluation per finished item; SFT and RL from their
last checkpoint). A changed upstream output changes the inputs of every stage after it (traces
hash, adapter hash), so those rerun and the ones before do not.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openrft.core.rundir import (
    RUN_FILE, RUN_FORMAT, IncompatibleRunError, Manifest, StageInputError, atomic_write_json, atomic_write_text,
)
from openrft.data.bundled import SCIKNOWEVAL_TASKS
from openrft.pipeline.recipe import STAGE_ORDER, Recipe
from openrft.pipeline.stages import STAGES, Cell, CellContext, free_memory

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"


def expand_tasks(tasks: str | Sequence[str] | None, recipe: Recipe) -> list[str]:
    """The datasets a run covers: the recipe's, or ``--tasks`` (``all`` = the 8 SciKnowEval L3 tasks).

    >>> expand_tasks("all", None)[:2]
    ['sciknoweval/GB1_ftness_prediction', 'sciknoweval/retrosynthesis']
    >>> expand_tasks("arithmetic,svamp", None)
    ['arithmetic', 'svamp']
    """
    if tasks is None:
        return list(recipe.data)
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    out: list[str] = []
    for t in tasks:
        if t in ("all", "sciknoweval/all"):
            out.extend(f"sciknoweval/{name}" for name in SCIKNOWEVAL_TASKS)
        elif t in SCIKNOWEVAL_TASKS:
            out.append(f"sciknoweval/{t}")
        else:
            out.append(t)
    if not out:
        raise ValueError("--tasks named no task")
    return list(dict.fromkeys(out))


def _cell_name(task: str) -> str:
    """Directory-safe short name of a dataset: its last path part without a suffix."""
    name = Path(task.rstrip("/")).name
    for suffix in (".jsonl", ".json", ".parquet", ".csv"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "task"


def plan_cells(recipe: Recipe, tasks: Sequence[str] | None = None,
               data_sizes: Sequence[int] | None = None) -> list[Cell]:
    """One cell per task and training-set size (``data_sizes`` default: the recipe's ``train_size``)."""
    tasks = list(tasks) if tasks else list(recipe.data)
    sizes: list[int | None] = list(data_sizes) if data_sizes else [recipe.train_size]
    cells, seen = [], set()
    for task in tasks:
        base = _cell_name(task)
        while base in seen:
            base += "_"
        seen.add(base)
        for size in sizes:
            cid = base if len(sizes) == 1 else f"{base}-n{size}"
            cells.append(Cell(id=cid, task=task, data_size=size, dir=cid))
    return cells


# ----------------------------------------------------------------------------------- run.json
class RunState:
    """``run.json``: written atomically after every stage transition, so a report or a rerun always sees
    which stages finished."""

    def __init__(self, run_dir: Path, recipe: Recipe, cells: list[Cell]):
        self.path = run_dir / RUN_FILE
        self.recipe, self.cells = recipe, cells
        from openrft import __version__

        self.data: dict[str, Any] = {
            "format_version": RUN_FORMAT, "openrft_version": __version__, "name": run_dir.name,
            "method": recipe.method, "recipe": recipe.source, "status": "running", "stages": recipe.ordered_stages,
            "started": time.time(), "finished": None, "cells": [],
        }
        old = read_run(run_dir) if self.path.exists() else None
        if old is not None:
            if old.get("method") != recipe.method:
                raise IncompatibleRunError(
                    f"{run_dir} holds a run of method {old.get('method')!r}, not {recipe.method!r}; use another "
                    f"--name (or delete {run_dir}) rather than mixing the outputs of two methods")
            self.data["started"] = old.get("started", self.data["started"])
            previous = {c.get("id"): c for c in old.get("cells", [])}
            for cell in cells:
                if cell.id in previous:
                    cell.stages = {k: v for k, v in previous[cell.id].get("stages", {}).items()
                                   if k in recipe.stages}
        self.save()

    def save(self) -> None:
        self.data["cells"] = [c.to_dict() for c in self.cells]
        atomic_write_json(self.path, self.data)

    def mark(self, cell: Cell, stage: str, status: str, seconds: float | None = None, **extra: Any) -> None:
        entry = {"status": status}
        if seconds is not None:
            entry["seconds"] = round(seconds, 2)
        cell.stages[stage] = entry | extra
        self.save()

    def finish(self, status: str) -> None:
        self.data["status"] = status
        self.data["finished"] = time.time() if status == "finished" else None
        self.save()


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``run.json`` of ``run_dir``; an incompatible format is an :class:`IncompatibleRunError`."""
    import json

    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise StageInputError(f"{run_dir} is not an openrft run directory (no {RUN_FILE}; 'openrft run' writes it)")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format_version") != RUN_FORMAT:
        raise IncompatibleRunError(
            f"{path} was written by openrft {data.get('openrft_version', '?')} with run format "
            f"{data.get('format_version')} (this openrft writes format {RUN_FORMAT}); rerun into a new run directory "
            "or use that version, rather than mixing outputs")
    return data


def _move_aside(stage_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = stage_dir.with_name(f"{stage_dir.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = stage_dir.with_name(f"{stage_dir.name}.replaced-{stamp}-{n}")
    stage_dir.rename(target)
    return target


def _finished_fingerprint(stage_dir: Path) -> str | None:
    try:
        m = Manifest.load(stage_dir)
    except IncompatibleRunError:
        raise
    except Exception:  # unreadable manifest: the stage decides
        return None
    return m.fingerprint if m is not None and m.status == "finished" else None


# ----------------------------------------------------------------------------------- run
@dataclass
class RunResult:
    run_dir: Path
    cells: list[Cell]
    accuracy: dict[str, float]  # cell id -> eval accuracy
    report: Path | None = None


def load_cell_data(recipe: Recipe, cell: Cell) -> tuple[list, list, list]:
    """A cell's warm-up training samples (the first ``train_size``), its RL training samples (the first
    ``data_size``: the same unless ``--data-sizes`` fans out) and its held-out samples (the first ``test_size``).

    A data-size study keeps the warm-up fixed and varies only the RL data (OpenRFT Fig. 3): synthesis, SFT, the
    PRM and the few-shot index see the same ``train_size`` questions in every cell."""
    from openrft.data.bundled import split_samples
    from openrft.data.lengths import drop_long_questions
    from openrft.data.loaders import load_sources
    from openrft.models.loading import context_window

    kw = {"answer_type": recipe.answer_type} if recipe.answer_type else {}
    needs_train = any(s != "eval" for s in recipe.stages) or recipe.icl is not None
    want = None if recipe.train_size is None or cell.data_size is None else max(recipe.train_size, cell.data_size)
    if recipe.resplit is not None:  # one split, cut in two with a seeded, duplicate-aware split
        pool = load_sources([cell.task], split=recipe.test_split, **kw)
        pool, test = split_samples(pool, recipe.resplit, seed=recipe.seed)
        test = test[: recipe.test_size]
    else:
        pool = load_sources([cell.task], split=recipe.train_split, limit_per_task=want, **kw) if needs_train else []
        test = load_sources([cell.task], split=recipe.test_split, limit_per_task=recipe.test_size, **kw)
    context = context_window(recipe.model)
    pool = drop_long_questions(pool, context, recipe.long_questions)
    test = drop_long_questions(test, context, recipe.long_questions)
    if not test:
        raise StageInputError(f"{cell.task}: no held-out samples to evaluate in split {recipe.test_split!r}")
    train = pool[: recipe.train_size] if recipe.train_size else list(pool)
    rl_train = pool[: cell.data_size] if cell.data_size else list(pool)
    if cell.data_size is not None and needs_train and len(rl_train) < cell.data_size:
        logger.warning("%s: asked for %d training samples, there are %d", cell.task, cell.data_size, len(rl_train))
    if needs_train and not train:
        raise StageInputError(f"{cell.task}: no training samples in split {recipe.train_split!r}; name another "
                              "train_split, or set resplit to cut the test split in two")
    return train, rl_train, test


#: backends that load no model here: a server's (openai) or none at all (the template rewriter)
REMOTE_BACKENDS = ("openai", "template")


def models_to_load(recipe: Recipe) -> list[str]:
    """The models the recipe's stages load here (each stage's ``model``, the recipe's for eval, synthesis's
    ``teacher`` and a PPO critic that is a model of its own), not those a server serves."""
    names: list[str | None] = []
    for stage in recipe.ordered_stages:
        config = recipe.stage_config(stage)
        backend = recipe.pipeline_value(stage, "backend") or getattr(config, "backend", "transformers")
        if backend not in REMOTE_BACKENDS and getattr(config, "source", "model") != "gold":
            names += [getattr(config, "model", recipe.model), getattr(config, "teacher", None)]
        if stage == "rl" and config.estimator == "gae" and config.critic not in ("adapter", "shared"):
            names.append(config.critic)
    return list(dict.fromkeys(n for n in names if n))


def preflight(recipe: Recipe, cells: Sequence[Cell]) -> dict[str, tuple[list, list, list]]:
    """Everything a run needs, checked before any stage runs and without loading a model: every model it loads
    exists (a bundled name, a local checkpoint, a hub id that can load), every metric destination (``report_to``)
    is installed, every cell's data loads and holds samples that fit the model, and ICL has enough training
    samples. Returns each cell's data (:func:`load_cell_data`)."""
    from openrft.core.tracking import check_installed
    from openrft.models.loading import check_model

    for model in models_to_load(recipe):
        check_model(model)
    for stage in recipe.ordered_stages:
        check_installed(getattr(recipe.stage_config(stage), "report_to", None) or [])
    data = {c.id: load_cell_data(recipe, c) for c in cells}
    for c in cells:
        _check_icl(recipe, c, data[c.id][0])
    return data


def _check_icl(recipe: Recipe, cell: Cell, train: list) -> None:
    if recipe.icl is None or recipe.icl.allow_fewer:
        return
    if recipe.icl.k >= len(train):
        raise ValueError(
            f"icl.k={recipe.icl.k} but {cell.task} has {len(train)} training samples (the question itself is "
            f"excluded, so at most {max(0, len(train) - 1)} examples exist); lower icl.k, raise train_size, or set "
            "icl.allow_fewer: true")


def feeding_stages(recipe: Recipe, stage: str) -> list[str]:
    """The stages before ``stage`` whose outputs it reads: all earlier ones, except ``augment`` for synthesis, SFT
    and the PRM when the augmented questions feed RL only (``augment.feed: rl``, the default).

    >>> from openrft.pipeline.recipe import Recipe
    >>> r = Recipe(name="x", method="x", model="m", data=["arithmetic"], stages={"augment": {}, "eval": {}})
    >>> feeding_stages(r, "sft"), feeding_stages(r, "rl")
    (['synthesize'], ['augment', 'synthesize', 'sft', 'prm'])
    """
    upstream = list(STAGE_ORDER[:STAGE_ORDER.index(stage)])
    if stage in ("synthesize", "sft", "prm") and recipe.pipeline_value("augment", "feed", "rl") == "rl":
        upstream.remove("augment")
    return upstream


def _reuse_stage(stage_dir: Path, stage: str, candidates: Sequence[Path], say: Callable[[str], None],
                 recipe: Recipe, cell_id: str) -> Path | None:
    """Copy a finished stage of another cell directory (``candidates``: the same cell of another run, or a
    sibling cell of this run) into ``stage_dir`` when this run has none yet.

    Only from a cell whose stages feeding this one (:func:`feeding_stages`) are this cell's (the same stages,
    finished with the same fingerprints): a stage downstream of different inputs cannot match. The copy is still
    only a candidate: the stage itself compares its manifest's fingerprint (settings and input hashes) with
    its own and reruns when they differ, so reuse can never change a result. Returns the stage copied, if any."""
    import shutil

    if stage_dir.exists():
        return None
    upstream = feeding_stages(recipe, stage)
    ours = [_finished_fingerprint(stage_dir.parent / s) for s in upstream]
    for cell_dir in candidates:
        src = Path(cell_dir) / stage
        if src.resolve() == stage_dir.resolve() or _finished_fingerprint(src) is None:
            continue
        if [_finished_fingerprint(src.parent / s) for s in upstream] != ours:
            continue
        shutil.copytree(src, stage_dir, ignore=shutil.ignore_patterns("checkpoints", "*.replaced-*"))
        say(f"[{cell_id}] {stage}: copied the finished stage of {src.parent} (used only if its settings and inputs "
            "match)")
        return src
    return None


#: stages whose inputs do not depend on a cell's data size (the warm-up): shared between the cells of one task
WARM_UP_STAGES = ("augment", "synthesize", "sft", "prm")


def _run_stage(ctx: CellContext, stage: str, candidates: Sequence[Path], state: RunState,
               say: Callable[[str], None]) -> dict[str, Any]:
    """One stage of one cell: take a finished copy from ``candidates`` if one matches, run (or skip) it, record it
    in ``run.json``; outputs of earlier settings are moved aside and the stage runs again."""
    cell, cdir = ctx.cell, ctx.dir
    copied = _reuse_stage(cdir / stage, stage, candidates, say, ctx.recipe, cell.id)
    before = _finished_fingerprint(cdir / stage)
    say(f"[{cell.id}] {stage} ...")
    state.mark(cell, stage, "running")
    t0 = time.perf_counter()
    try:
        info = STAGES[stage](ctx)
    except IncompatibleRunError as err:
        if copied is not None:  # a candidate that did not match: nothing of this run's own is lost
            import shutil

            shutil.rmtree(cdir / stage)
            say(f"[{cell.id}] {stage}: the stage copied from {copied.parent} was made with other settings or "
                "inputs; dropped the copy, running it")
        else:  # outputs of earlier settings or inputs (the recipe or an upstream stage changed): kept aside,
            # never mixed with the new ones, and the stage runs again
            aside = _move_aside(cdir / stage)
            say(f"[{cell.id}] {stage}: {err}; moved the earlier outputs to {aside} and running it again")
        info = STAGES[stage](ctx)
    seconds = time.perf_counter() - t0
    after = _finished_fingerprint(cdir / stage)
    skipped = before is not None and before == after
    info = {k: v for k, v in info.items() if v is not None}
    state.mark(cell, stage, "skipped" if skipped else "finished", seconds, **info)
    say(f"[{cell.id}] {stage} {'skipped (finished earlier with the same settings)' if skipped else 'done'}"
        f" in {seconds:.1f}s" + "".join(f", {k} {v:.3f}" if isinstance(v, float) else f", {k} {v}"
                                       for k, v in info.items()))
    free_memory()
    return info


def run_recipe(recipe: Recipe, run_dir: str | os.PathLike, *, tasks: Sequence[str] | None = None,
               data_sizes: Sequence[int] | None = None, show_progress: bool = True, report: bool = True,
               reuse_from: Sequence[str | os.PathLike] = (), reuse_stages: Sequence[str] | None = None,
               log: Callable[[str], None] | None = None) -> RunResult:
    """Run every cell's stages (see the module docstring); rerunning continues where it stopped.

    ``reuse_from``: other run directories whose finished stages (same cell) may stand in for this run's,
    e.g. the synthesis and SFT of an SFT run reused by SFT+RL; each stage checks the match itself.
    ``reuse_stages``: only these stages are taken from ``reuse_from`` (default: any). The warm-up stages of the
    cells of one task with different data sizes are shared the same way."""
    import yaml

    say = log or (lambda msg: print(msg, file=sys.stderr))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cells = plan_cells(recipe, tasks, data_sizes)
    data = preflight(recipe, cells)
    if recipe.icl is not None:
        from openrft.retrieval.embedder import DEFAULT_EMBEDDER, load_embedder

        embedder = load_embedder(recipe.icl.embedder or DEFAULT_EMBEDDER)  # fails now if it is not installed
    state = RunState(run_dir, recipe, cells)
    resolved = recipe.to_dict() | {"data": [c.task for c in cells] if tasks else recipe.data}
    if data_sizes:
        resolved["data_sizes"] = list(data_sizes)
    atomic_write_text(run_dir / RECIPE_FILE, yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
    accuracy: dict[str, float] = {}
    current: tuple[Cell, str] | None = None
    try:
        for cell in cells:
            train, rl_train, test = data[cell.id]
            cdir = run_dir / cell.dir
            ctx = CellContext(recipe, cell, cdir, train, test, show_progress=show_progress, train_samples=list(train),
                              rl_train=list(rl_train))
            if recipe.icl is not None:
                from openrft.retrieval.fewshot import make_examples_for

                ctx.examples_for = make_examples_for(train, recipe.icl.k, embedder, index_dir=cdir / "icl",
                                                     allow_fewer=recipe.icl.allow_fewer)
            for stage in recipe.ordered_stages:
                current = (cell, stage)
                candidates = [Path(p) / cell.dir for p in reuse_from] \
                    if reuse_stages is None or stage in reuse_stages else []
                if stage in WARM_UP_STAGES:
                    candidates += [run_dir / c.dir for c in cells if c.task == cell.task and c is not cell]
                info = _run_stage(ctx, stage, candidates, state, say)
                if stage == "eval":
                    accuracy[cell.id] = info["accuracy"]
            current = None
    except BaseException as err:
        if current is not None:
            cell, stage = current
            state.mark(cell, stage, "interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                       **({} if isinstance(err, KeyboardInterrupt) else {"error": f"{type(err).__name__}: {err}"[:500]}))
        state.finish("interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
        raise
    state.finish("finished")
    report_path = None
    if report:
        report_path = write_report_if_available(run_dir, say)
    return RunResult(run_dir, cells, accuracy, report_path)


def write_report_if_available(run_dir: Path, say: Callable[[str], None]) -> Path | None:
    """The run's Markdown/HTML report (``openrft.report``), or None when reporting fails (the run stands)."""
    from openrft.report import write_run_report

    try:
        md, _html = write_run_report(run_dir)
    except Exception as err:  # a failed plot must not fail a finished run; 'openrft report' retries it
        logger.exception("writing the report of %s failed", run_dir)
        say(f"the run finished but its report failed ({type(err).__name__}: {err}); retry with 'openrft report {run_dir}'")
        return None
    return Path(md)
