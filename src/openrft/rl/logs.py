"""What an RL stage keeps on disk besides its adapters: ``metrics.jsonl`` (one line per step, TensorBoard too
when installed) and the step checkpoints a killed run resumes from."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

METRICS = "metrics.jsonl"
_CKPT_RE = re.compile(r"^step-(\d+)$")


class MetricsLog:
    """``metrics.jsonl`` (one line per step) + TensorBoard when installed."""

    def __init__(self, out_dir: Path, tensorboard: bool = True):
        self.path = out_dir / METRICS
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                self.tb = None

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
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self.tb.add_scalar(k, v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


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
