"""Reading a run directory written by ``openrft run``: ``run.json``, and each cell's stage outputs.

A run is one recipe applied to one or more cells, a cell being one (task, training-set size)
combination. Each cell keeps every stage's outputs under ``<cell dir>/<stage>/``, exactly as
the stage CLIs write them (``rl/metrics.jsonl``, ``sft/metrics.jsonl``, ``eval/report.json``,
``eval/completions.jsonl``). Nothing here needs torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from openrft.evaluate.runner import COMPLETIONS, EvalResult, TaskMetrics
from openrft.core.rundir import MANIFEST, IncompatibleRunError
from openrft.core.rundir import RUN_FILE as RUN_JSON
from openrft.core.rundir import RUN_FORMAT as RUN_FORMAT_VERSION  # the run.json format this openrft reads
METRICS = "metrics.jsonl"  # rl/ and sft/ both log one JSON line per step here
EVAL_REPORT = "report.json"

__all__ = ["RUN_JSON", "RUN_FORMAT_VERSION", "Cell", "IncompatibleRunError", "Run", "RunDirError", "StageInfo",
           "load_run", "eval_result_from_dict", "read_jsonl_rows", "read_completions"]


class RunDirError(ValueError):
    """A path that is not a readable run directory; the message names the path and what is wrong."""


@dataclass(frozen=True)
class StageInfo:
    """One stage of one cell as ``run.json`` records it."""

    status: str  # finished | skipped | running | failed
    seconds: float | None = None


@dataclass
class Cell:
    """One (task, data size) combination of a run and what its stages left on disk."""

    id: str
    task: str
    data_size: int | None
    dir: Path  # absolute
    stages: dict[str, StageInfo] = field(default_factory=dict)
    eval_results: list[EvalResult] = field(default_factory=list)  # eval/report.json; empty when not evaluated
    eval_note: str | None = None  # why there is no evaluation, when there is none
    eval_finished_at: float | None = None  # eval/manifest.json's finish time, to tell the latest of several runs

    @property
    def evaluated(self) -> bool:
        return bool(self.eval_results)

    def stage_dir(self, stage: str) -> Path:
        return self.dir / stage

    def rl_metrics(self) -> list[dict[str, Any]]:
        """``rl/metrics.jsonl``: one dict per RL step (empty without an RL stage)."""
        return read_jsonl_rows(self.stage_dir("rl") / METRICS)

    def sft_losses(self) -> list[tuple[int, float]]:
        """``(step, loss)`` per logging step of ``sft/metrics.jsonl``, in step order."""
        rows = read_jsonl_rows(self.stage_dir("sft") / METRICS)
        by_step = {int(r["step"]): float(r["loss"]) for r in rows if "step" in r and "loss" in r}
        return sorted(by_step.items())

    def prm_quality(self) -> dict[str, Any] | None:
        """``prm/quality/quality.json`` (the prm stage's held-out measures), or None when absent or unreadable."""
        from openrft.reward_models.quality import QUALITY_DIR, QUALITY_FILE

        path = self.stage_dir("prm") / QUALITY_DIR / QUALITY_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("scorers"), dict) else None

    def completions(self) -> list[dict[str, Any]]:
        """The graded items of ``eval/completions.jsonl`` (empty when absent)."""
        return read_completions(self.stage_dir("eval") / COMPLETIONS)


@dataclass
class Run:
    """A run directory: ``run.json`` plus its cells."""

    path: Path
    name: str
    method: str
    recipe: str
    status: str  # running | finished | failed
    stages: list[str]
    cells: list[Cell]
    openrft_version: str = ""
    format_version: int = RUN_FORMAT_VERSION

    @property
    def tasks(self) -> list[str]:
        """The cells' tasks, in first-seen order."""
        return list(dict.fromkeys(c.task for c in self.cells))

    @property
    def data_sizes(self) -> list[int | None]:
        """The cells' training-set sizes, in first-seen order (None: the whole training set)."""
        return list(dict.fromkeys(c.data_size for c in self.cells))


def read_jsonl_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, skipping blank and torn lines; empty when the file is absent.

    Reads ``metrics.jsonl`` as :func:`openrft.rl.logs.read_metrics` does, without importing torch.
    """
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill mid-write
        if isinstance(row, dict):
            rows.append(row)
    return rows


def read_completions(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Graded items of an eval ``completions.jsonl`` (``id, task, gold, samples[...]``), last line per id."""
    by_id: dict[str, dict[str, Any]] = {}
    for r in read_jsonl_rows(path):
        if "id" in r and isinstance(r.get("samples"), list):
            by_id[str(r["id"])] = r
    return list(by_id.values())


def eval_result_from_dict(d: dict[str, Any]) -> EvalResult:
    """Rebuild an :class:`EvalResult` from its ``to_dict()`` (one entry of an eval ``report.json``).

    >>> from openrft.evaluate.runner import EvalResult, TaskMetrics
    >>> t = TaskMetrics("demo", 2, 0.5, 0.0, [0.5], 0.5, 1.0, 1, 1.0, 10.0, 0.0)
    >>> r = EvalResult("SFT", "m", {"n": 1}, [t], tokens=20, seconds=1.0)
    >>> eval_result_from_dict(r.to_dict()) == r
    True
    """
    known = {f.name for f in fields(TaskMetrics)}
    tasks = [TaskMetrics(**{k: v for k, v in t.items() if k in known}) for t in d["tasks"]]
    return EvalResult(label=str(d["label"]), model=str(d.get("model", "")), config=dict(d.get("config") or {}),
                      tasks=tasks, tokens=int(d.get("tokens", 0)), seconds=float(d.get("seconds", 0.0)))


def _load_eval(cell: Cell) -> None:
    """Fill ``cell.eval_results`` from ``eval/report.json``, or say in ``cell.eval_note`` why there is none."""
    eval_dir = cell.stage_dir("eval")
    path = eval_dir / EVAL_REPORT
    info = cell.stages.get("eval")
    if not path.is_file():
        state = f" (eval stage {info.status})" if info is not None else " (no eval stage)"
        cell.eval_note = f"not evaluated: {path} is missing{state}"
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, list):
            raise TypeError("expected a list of evaluation results")
        cell.eval_results = [eval_result_from_dict(d) for d in data]
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as err:
        cell.eval_note = f"not evaluated: {path} is unreadable ({type(err).__name__}: {err})"
        return
    if not cell.eval_results:
        cell.eval_note = f"not evaluated: {path} holds no results"
    try:
        manifest = json.loads((eval_dir / MANIFEST).read_text(encoding="utf-8"))
        cell.eval_finished_at = float(manifest["finished"]) if manifest.get("finished") else None
    except (OSError, ValueError, KeyError, TypeError):
        cell.eval_finished_at = None
    if cell.eval_finished_at is None:
        cell.eval_finished_at = path.stat().st_mtime


def _field(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in data:
        raise RunDirError(f"{where}: field {key!r} is missing")
    if not isinstance(data[key], kind):
        raise RunDirError(f"{where}: field {key!r} has the wrong type ({type(data[key]).__name__})")
    return data[key]


def _load_cell(run_dir: Path, raw: Any, index: int, where: Path) -> Cell:
    at = f"{where}: cells[{index}]"
    if not isinstance(raw, dict):
        raise RunDirError(f"{at} is not an object")
    for key in ("id", "task", "dir"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise RunDirError(f"{at}: field {key!r} is missing or not a string")
    size = raw.get("data_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise RunDirError(f"{at}: field 'data_size' must be an integer or null, got {size!r}")
    stages = {}
    for name, info in (raw.get("stages") or {}).items():
        if not isinstance(info, dict):
            raise RunDirError(f"{at}: stages[{name!r}] is not an object")
        secs = info.get("seconds")
        stages[name] = StageInfo(status=str(info.get("status", "unknown")),
                                 seconds=float(secs) if isinstance(secs, (int, float)) else None)
    cell = Cell(id=raw["id"], task=raw["task"], data_size=size, dir=(run_dir / raw["dir"]).resolve(), stages=stages)
    _load_eval(cell)
    return cell


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory written by ``openrft run``.

    Raises :class:`RunDirError` when ``path`` is not a run directory or its ``run.json`` is
    malformed, and :class:`IncompatibleRunError` when ``run.json`` has another format version.
    A cell without an evaluation is kept, with ``cell.eval_note`` saying why.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such directory (a run directory is made by 'openrft run <recipe>')")
    where = run_dir / RUN_JSON
    if not where.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no {RUN_JSON}); run directories are made by "
                          "'openrft run <recipe>' (a single stage's output folder has no report of its own)")
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(f"{where}:{err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{where}: expected a JSON object")
    version = data.get("format_version")
    if version != RUN_FORMAT_VERSION:
        made_by = data.get("openrft_version") or "unknown"
        raise IncompatibleRunError(
            f"{where}: format_version {version!r} was made by an incompatible openrft version ({made_by}); "
            f"this openrft reads format_version {RUN_FORMAT_VERSION}; rerun it or use that version")
    raw_cells = _field(data, "cells", list, where)
    return Run(
        path=run_dir.resolve(),
        name=str(data.get("name") or run_dir.name),
        method=_field(data, "method", str, where),
        recipe=str(data.get("recipe", "")),
        status=_field(data, "status", str, where),
        stages=[str(s) for s in _field(data, "stages", list, where)],
        cells=[_load_cell(run_dir, c, i, where) for i, c in enumerate(raw_cells)],
        openrft_version=str(data.get("openrft_version", "")),
        format_version=version,
    )
