"""SFT metrics in W&B (offline) and MLflow (a file store) through --report-to, outside the stage's identity."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from tracking_files import mlflow_runs, mlflow_store, wandb_offline, wandb_offline_runs  # noqa: F401  (fixtures)

from openrft.cli import sft as sft_cli
from openrft.core.rundir import Manifest, stable_hash
from openrft.sft import SFTStageConfig, run_sft
from openrft.sft.stage import read_losses


def test_sft_losses_reach_wandb_and_mlflow_and_the_identity_ignores_them(micro_model_dir, traces_file, tmp_path,
                                                                         wandb_offline, mlflow_store):
    out = tmp_path / "cell" / "sft"
    config = dict(model=str(micro_model_dir), epochs=1, batch_size=4, learning_rate=2e-2, measure_loss=False)
    run_sft(traces_file, out, SFTStageConfig(**config, report_to=["wandb", "mlflow"]), show_progress=False)
    losses = read_losses(out)
    assert [step for step, _ in losses] == [1, 2]  # 8 examples, batch 4

    (wb,) = wandb_offline_runs(wandb_offline)
    assert wb["name"] == "cell/sft"
    assert [(h["_step"], h["loss"]) for h in wb["history"]] == losses

    (ml,) = mlflow_runs(mlflow_store)
    history = mlflow_store.get_metric_history(ml.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == losses
    assert ml.data.tags["openrft.stage"] == "sft" and ml.info.status == "FINISHED"

    assert Manifest.load(out).config["report_to"] == "none"
    assert run_sft(traces_file, out, SFTStageConfig(**config), show_progress=False).skipped


def test_sft_identity_is_the_one_from_before_report_to_took_destinations():
    """report_to was a string defaulting to 'none' in every SFT identity; any destination keeps that identity."""
    assert stable_hash(SFTStageConfig().settings()) == "1de672d1e021301f"
    assert SFTStageConfig(report_to="wandb,mlflow").settings() == SFTStageConfig().settings()
    assert asdict(SFTStageConfig(report_to="wandb,mlflow"))["report_to"] == ["wandb", "mlflow"]


@pytest.mark.parametrize("argv, expected", [
    ([], None),
    (["--report-to", "mlflow,wandb"], ["mlflow", "wandb"]),
    (["--report-to", "tensorboard", "--report-to", "wandb"], ["tensorboard", "wandb"]),
])
def test_report_to_flag_is_comma_separated_or_repeated(argv, expected):
    args = sft_cli.build_parser().parse_args(["--traces", "t.jsonl", "--out", "x", *argv])
    assert sft_cli.make_config(args).report_to == expected
