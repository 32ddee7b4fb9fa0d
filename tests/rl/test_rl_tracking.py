"""RL metrics in W&B (offline) and MLflow (a file store) through --report-to, outside the stage's identity."""

from __future__ import annotations

import json

import pytest
from tracking_files import mlflow_runs, mlflow_store, wandb_offline, wandb_offline_runs  # noqa: F401  (fixtures)

from openrft.cli import rl as rl_cli
from openrft.core.rundir import Manifest
from openrft.data.loaders import load_bundled
from openrft.rl.config import RLConfig
from openrft.rl.config import rl_settings
from openrft.rl.stage import run_rl


def _config(tiny_model_dir, **kw) -> RLConfig:
    return RLConfig(**dict(model=str(tiny_model_dir), steps=2, prompts_per_step=2, n_samples=2, max_new_tokens=4,
                           micro_batch_size=4, lora_rank=2, tensorboard=False, save_every=100, seed=0) | kw)


def test_rl_steps_reach_wandb_and_mlflow_and_the_identity_ignores_them(tiny_model_dir, tmp_path, wandb_offline,
                                                                       mlflow_store):
    samples = load_bundled("svamp", "test")[:4]
    out = tmp_path / "cell" / "rl"
    result = run_rl(_config(tiny_model_dir, report_to=["wandb", "mlflow"]), out, samples, show_progress=False)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and len(result.metrics) == 2

    (wb,) = wandb_offline_runs(wandb_offline)
    assert wb["name"] == "cell/rl"
    assert [(h["_step"], h["reward"], h["kl"]) for h in wb["history"]] == [(r["step"], r["reward"], r["kl"]) for r in rows]

    (ml,) = mlflow_runs(mlflow_store)
    history = mlflow_store.get_metric_history(ml.info.run_id, "reward/value")  # beside reward/outcome/mean
    assert [(m.step, m.value) for m in history] == [(r["step"], r["reward"]) for r in rows]
    assert ml.data.params["estimator"] == "grpo" and ml.data.params["reward.alpha"] == "0.7"
    assert ml.info.status == "FINISHED"

    manifest = Manifest.load(out)
    assert "report_to" not in manifest.config and "tensorboard" not in manifest.config
    again = run_rl(_config(tiny_model_dir, tensorboard=True), out, samples, show_progress=False)
    assert again.skipped  # other destinations, same stage


def test_report_to_leaves_the_default_identity_unchanged():
    assert rl_settings(RLConfig(report_to=["wandb", "mlflow"])) == rl_settings(RLConfig())


@pytest.mark.parametrize("argv, expected", [
    ([], None),
    (["--report-to", "wandb,mlflow"], ["wandb", "mlflow"]),
    (["--report-to", "wandb", "--report-to", "tensorboard", "mlflow"], ["wandb", "tensorboard", "mlflow"]),
    (["--report-to", "none"], []),
])
def test_report_to_flag_is_comma_separated_or_repeated(argv, expected):
    config = rl_cli.make_config(rl_cli.build_parser().parse_args(["--out", "x", *argv]))
    assert config.report_to == expected


def test_an_unknown_destination_ends_the_command_in_one_line(tmp_path, capsys):
    code = rl_cli.main(["--out", str(tmp_path / "rl"), "--data", "arithmetic", "--report-to", "comet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1] == ("openrft rl: report_to: unknown destination(s) 'comet'; valid: tensorboard, wandb, mlflow, "
                       "none")
