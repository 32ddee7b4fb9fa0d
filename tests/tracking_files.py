"""What the metric destinations wrote, read back with the real packages: W&B's offline run files and MLflow's
tracking store. Fixtures put both in a test's own folder."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

_WANDB_HEADER = 7  # ":W&B" + 2-byte magic + 1-byte version
_BLOCK = 32768  # the LevelDB log format W&B writes its records in
_FULL, _LAST = 1, 4


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", _WANDB_HEADER
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (_FULL, _LAST):
            records.append(pending)
            pending = b""
    return records


def wandb_offline_runs(wandb_dir: Path, wait_s: float = 30.0) -> list[dict]:
    """Every offline run under ``wandb_dir``: ``{"name", "history"}``, history = the logged rows (``_step`` and
    the metrics; W&B's own ``_runtime``/``_timestamp`` left out), parsed with W&B's own protobuf records.

    W&B's service process writes the file; on a loaded machine its run record has been seen to land after
    ``finish()`` returned, so the files are read again (up to ``wait_s``) until every run has its run record."""
    deadline = time.monotonic() + wait_s
    while True:
        runs = _read_wandb_runs(wandb_dir)
        if (runs and all(run["name"] is not None for run in runs)) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def _read_wandb_runs(wandb_dir: Path) -> list[dict]:
    from wandb.proto import wandb_internal_pb2

    runs = []
    for path in sorted(Path(wandb_dir).glob("wandb/offline-run-*/run-*.wandb")):
        name, history = None, []
        for raw in _records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                name = record.run.display_name
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
                history.append({k: v for k, v in row.items() if k not in ("_runtime", "_timestamp")})
        runs.append({"name": name, "history": history})
    return runs


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    """W&B in offline mode, its files in ``tmp_path/wandb-files``; yields that folder. W&B reads its environment
    once per process, so its process-wide state is torn down before and after."""
    wandb = pytest.importorskip("wandb", reason="wandb is not installed (pip install 'openrft[wandb]')")
    folder = tmp_path / "wandb-files"
    folder.mkdir()
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(folder), "WANDB_SILENT": "true",
                       "WANDB_PROJECT": "openrft-tests"}.items():
        monkeypatch.setenv(key, value)
    wandb.teardown()
    yield folder
    wandb.teardown()


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """An MLflow file store in ``tmp_path/mlruns`` (MLflow 3 asks for MLFLOW_ALLOW_FILE_STORE to use one);
    returns an ``MlflowClient`` on it."""
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install 'openrft[mlflow]')")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    for key, value in {"MLFLOW_TRACKING_URI": uri, "MLFLOW_ALLOW_FILE_STORE": "true",
                       "MLFLOW_EXPERIMENT_NAME": "openrft-tests"}.items():
        monkeypatch.setenv(key, value)
    return MlflowClient(tracking_uri=uri)


def mlflow_runs(client) -> list:
    """The runs of the tests' experiment, oldest first."""
    experiment = client.get_experiment_by_name("openrft-tests")
    return sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.info.start_time)
