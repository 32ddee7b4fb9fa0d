"""Metric destinations (openrft.core.tracking) against the real packages: W&B offline, an MLflow file store."""

from __future__ import annotations

import math

import pytest
from tracking_files import mlflow_runs, mlflow_store, wandb_offline, wandb_offline_runs  # noqa: F401  (fixtures)

from openrft.core import tracking
from openrft.core.tracking import Trackers, check_installed, parse_report_to


@pytest.mark.parametrize("value, expected", [
    (None, None),
    ("none", []),
    (["none"], []),
    ("wandb", ["wandb"]),
    ("WandB, mlflow", ["wandb", "mlflow"]),
    (["wandb,mlflow", "tensorboard", "wandb"], ["wandb", "mlflow", "tensorboard"]),
])
def test_report_to_takes_commas_and_repeats_like_trl(value, expected):
    assert parse_report_to(value) == expected


@pytest.mark.parametrize("value, message", [
    ("wandb,comet", r"unknown destination\(s\) 'comet'; valid: tensorboard, wandb, mlflow, none"),
    (["none", "wandb"], "'none' cannot be combined"),
])
def test_bad_report_to_values_are_named(value, message):
    with pytest.raises(ValueError, match=message):
        parse_report_to(value)


def test_a_missing_package_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(tracking.REPORT_TO, "wandb", "openrft_tests_no_such_module")
    with pytest.raises(ValueError, match=r"report_to wandb needs openrft_tests_no_such_module: "
                                         r"pip install 'openrft\[wandb\]'"):
        check_installed(["wandb"])


ROWS = [{"step": 1, "reward": 0.25, "reward/outcome/mean": 0.5, "kl": 0.5, "note": "text", "nan": math.nan},
        {"step": 2, "reward": 0.75, "reward/outcome/mean": 1.0, "kl": 0.25, "note": "text", "nan": math.nan}]


def _log(out, names, config=None):
    trackers = Trackers(names, out, stage="rl", config=config or {"lr": 3e-5, "reward": {"alpha": 0.7}})
    try:
        for row in ROWS:
            trackers.log(row, row["step"])
    finally:
        trackers.close()


def test_wandb_offline_run_holds_every_logged_step(tmp_path, wandb_offline):
    _log(tmp_path / "cell" / "rl", ["wandb"])
    (run,) = wandb_offline_runs(wandb_offline)
    assert run["name"] == "cell/rl"
    assert run["history"] == [{"_step": 1, "reward": 0.25, "reward/outcome/mean": 0.5, "kl": 0.5},
                              {"_step": 2, "reward": 0.75, "reward/outcome/mean": 1.0, "kl": 0.25}]


def test_mlflow_run_holds_every_logged_step_and_the_settings(tmp_path, mlflow_store):
    _log(tmp_path / "cell" / "rl", ["mlflow"])
    (run,) = mlflow_runs(mlflow_store)
    history = mlflow_store.get_metric_history(run.info.run_id, "reward/value")  # 'reward' is also a folder
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.75)]
    assert set(run.data.metrics) == {"reward/value", "reward/outcome/mean", "kl"}  # no 'step', text or NaN
    assert run.data.params == {"lr": "3e-05", "reward.alpha": "0.7"}
    assert run.info.run_name == "cell/rl" and run.data.tags["openrft.stage"] == "rl"
    assert run.info.status == "FINISHED"


def test_no_destination_logs_nowhere(tmp_path):
    trackers = Trackers([], tmp_path, stage="rl")
    assert not trackers
    trackers.log(ROWS[0], 1)
    trackers.close()
    assert list(tmp_path.iterdir()) == []
