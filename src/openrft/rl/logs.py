"""What an RL stage keeps on disk besides its adapters: ``metrics.jsonl`` (one line per step, also sent to the
stage's ``report_to`` destinations: TensorBoard, W&B, MLflow) and the step checkpoints a killed run resumes from."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from openrft.core.tracking import Trackers, installed

METRICS = "metrics.jsonl"
_CKPT_RE = re.compile(r"^step-(\d+)$")


class MetricsLog:
    """``metrics.jsonl`` (one line per step) + the ``report_to`` destinations (:class:`~openrft.core.tracking.Trackers`).

    ``report_to=None`` keeps the behaviour from before it existed: TensorBoard when ``tensorboard`` is set and
    TensorBoard is installed. A list names every destination (``[]``: the file only).
    """

    def __init__(self, out_dir: Path, tensorboard: bool = True, report_to: Sequence[str] | None = None,
                 config: Mapping[str, Any] | None = None):
        self.path = out_dir / METRICS
        if report_to is None:
            report_to = ["tensorboard"] if tensorboard and installed("tensorboard") else []
        self.trackers = Trackers(report_to, out_dir, stage="rl", config=config)

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after ``step`` (written after the checkpoint a resumed run restarts from)."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and _is_json(line) and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.trackers.log(row, row["step"])

    def close(self) -> None:
        self.trackers.close()


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False


def read_metrics(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(out_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and _is_json(line)]


def last_checkpoint(ckpt_dir: Path) -> tuple[Path, int] | None:
    """The newest complete checkpoint (one with ``state.json``) and its step."""
    best = None
    if ckpt_dir.is_dir():
        for d in ckpt_dir.iterdir():
            m = _CKPT_RE.match(d.name)
            if m and (d / "state.json").is_file() and (best is None or int(m.group(1)) > best[1]):
                best = (d, int(m.group(1)))
    return best


def checkpoint_dirs(ckpt_dir: Path) -> list[Path]:
    """Every ``step-N`` directory under ``ckpt_dir``, oldest first (complete or not)."""
    return sorted((d for d in ckpt_dir.iterdir() if _CKPT_RE.match(d.name)), key=lambda d: d.name)
