"""Where a stage's metrics go besides its ``metrics.jsonl``: TensorBoard, Weights & Biases, MLflow.

Each destination is optional and imported only when a stage asks for it (``report_to``, as trl's
``--report_to``): ``pip install 'openrft[tensorboard]'``, ``'openrft[wandb]'``, ``'openrft[mlflow]'``. They are set
up the way the tools themselves are:

* TensorBoard writes ``<stage dir>/tensorboard``;
* W&B reads ``WANDB_PROJECT`` (default ``openrft``), ``WANDB_MODE`` (``offline`` keeps the run on disk),
  ``WANDB_DIR``, ``WANDB_ENTITY`` and its login;
* MLflow reads ``MLFLOW_TRACKING_URI`` (a server, ``sqlite:///mlflow.db``, ``file:///path``) and
  ``MLFLOW_EXPERIMENT_NAME`` (default ``openrft``) or ``MLFLOW_EXPERIMENT_ID``.

A stage's run is named after its directory (``<cell>/rl``) and carries the stage's settings (W&B config,
MLflow params). Destinations never enter a stage's identity: logging elsewhere never reruns a stage.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = ["REPORT_TO", "Tracker", "Trackers", "check_installed", "installed", "parse_report_to"]

#: destinations, each with the module it needs
REPORT_TO = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
_MLFLOW_PARAMS_PER_CALL = 100  # MLflow's limit for params in one log_batch


def parse_report_to(value: str | Sequence[str] | None) -> list[str] | None:
    """Destination names from a flag or recipe value: comma-separated and/or a list; ``none`` = no destination;
    ``None`` stays ``None`` (the stage's default).

    >>> parse_report_to(["wandb,mlflow", "tensorboard"]), parse_report_to("none"), parse_report_to(None)
    (['wandb', 'mlflow', 'tensorboard'], [], None)
    """
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        for name in str(item).split(","):
            name = name.strip().lower()
            if name and name not in names:
                names.append(name)
    unknown = [n for n in names if n not in REPORT_TO and n != "none"]
    if unknown:
        raise ValueError(f"report_to: unknown destination(s) {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(REPORT_TO)}, none")
    if "none" in names and len(names) > 1:
        raise ValueError(f"report_to: 'none' cannot be combined with other destinations, got {names}")
    return [n for n in names if n != "none"]


def installed(name: str) -> bool:
    """Whether the package destination ``name`` needs can be imported."""
    return importlib.util.find_spec(REPORT_TO[name]) is not None


def check_installed(names: Iterable[str]) -> None:
    """Raise ``ValueError`` naming the extra to install for each destination whose package is missing (checked
    before a stage loads any model)."""
    missing = [n for n in names if not installed(n)]
    if missing:
        extras = ",".join(missing)
        raise ValueError(f"report_to {', '.join(missing)} needs {', '.join(REPORT_TO[n] for n in missing)}: "
                         f"pip install 'openrft[{extras}]'")


class Tracker(Protocol):
    """One destination: scalars per step, then ``close``."""

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardTracker:
    """Scalars in ``log_dir`` (torch's ``SummaryWriter``)."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run per stage run (its own run object: a run the caller opened stays untouched)."""

    def __init__(self, run_name: str, stage: str, config: Mapping[str, Any]):
        import wandb

        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "openrft"), name=run_name, job_type=stage,
                              config=dict(config), reinit="create_new")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


class MlflowTracker:
    """One MLflow run per stage run, through ``MlflowClient`` (no global active run is started or ended).

    A metric whose name is also the folder of other metrics (RL's ``reward`` beside ``reward/outcome/mean``) is
    logged as ``<name>/value``: MLflow's file store keeps each metric in a file at its name's path, where a name
    cannot be a file and a folder at once. Every store gets the same names.
    """

    def __init__(self, run_name: str, stage: str, config: Mapping[str, Any]):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        run = self.client.create_run(self._experiment_id(), run_name=run_name, tags={"openrft.stage": stage})
        self.run_id = run.info.run_id
        self.folders: set[str] = set()
        params = [Param(k, v) for k, v in _flatten(config).items()]
        for i in range(0, len(params), _MLFLOW_PARAMS_PER_CALL):
            self.client.log_batch(self.run_id, params=params[i:i + _MLFLOW_PARAMS_PER_CALL])

    def _experiment_id(self) -> str:
        if os.environ.get("MLFLOW_EXPERIMENT_ID"):
            return os.environ["MLFLOW_EXPERIMENT_ID"]
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "openrft")
        found = self.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else self.client.create_experiment(name)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self.folders |= {k.rsplit("/", i)[0] for k in metrics for i in range(1, k.count("/") + 1)}
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{k}/value" if k in self.folders else k, v, now, step)
                                                    for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackers:
    """The destinations of one stage run, as one: finite numbers of each row go to every one of them.

    Args:
        names: destinations (:data:`REPORT_TO` names), e.g. from :func:`parse_report_to`.
        out_dir: the stage directory (TensorBoard writes ``out_dir/tensorboard``; runs are named after it).
        stage: the stage (``rl``, ``sft``): W&B job type, MLflow tag.
        config: the stage's settings, stored with the run.
    """

    def __init__(self, names: Sequence[str], out_dir: str | os.PathLike, stage: str,
                 config: Mapping[str, Any] | None = None):
        out = Path(out_dir)
        run_name = f"{out.resolve().parent.name}/{out.name}"
        config = config or {}
        self.trackers: list[Tracker] = []
        try:
            for name in names:
                if name == "tensorboard":
                    self.trackers.append(TensorBoardTracker(out / "tensorboard"))
                elif name == "wandb":
                    self.trackers.append(WandbTracker(run_name, stage, config))
                elif name == "mlflow":
                    self.trackers.append(MlflowTracker(run_name, stage, config))
                else:
                    raise ValueError(f"unknown report_to destination {name!r}; valid: {', '.join(REPORT_TO)}")
        except BaseException:
            self.close()
            raise

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        """The finite numbers of ``row`` (except its ``step``) at ``step``."""
        metrics = {k: float(v) for k, v in row.items()
                   if k != "step" and isinstance(v, (int, float)) and math.isfinite(v)}
        for tracker in self.trackers:
            tracker.log(metrics, step)

    def close(self) -> None:
        while self.trackers:
            self.trackers.pop().close()
