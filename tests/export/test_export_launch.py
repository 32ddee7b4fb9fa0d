"""The launch scripts: a recipe's RL settings as verl's hydra overrides and OpenRLHF's train_ppo_ray flags, the files
found next to the script, and every recipe setting the engine cannot take named, with what to do.

The scripts run here with a stand-in ``python3`` on PATH that prints its arguments, so the test sees exactly what the
engine would receive after the shell expanded the script. Whether verl 0.9.1 and OpenRLHF 0.11.2 know every key and
flag is checked against those releases by ``bench/check_engines.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from openrft.cli.main import main as openrft_main

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def engine_args(script: Path, tmp_path: Path, *extra: str, **env: str) -> list[str]:
    """The arguments the script hands ``python3``, with a stand-in python3 that prints them one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(script), *extra], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **env})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def overrides(args: list[str]) -> dict[str, str]:
    assert args[:2] == ["-m", "verl.trainer.main_ppo"]
    return dict(a.split("=", 1) for a in args[2:])


def flags(args: list[str]) -> dict[str, list[str]]:
    assert args[:2] == ["-m", "openrlhf.cli.train_ppo_ray"]
    out: dict[str, list[str]] = {}
    for a in args[2:]:
        if a.startswith("--"):
            key = a
            out[key] = []
        else:
            out[key].append(a)
    return out


def export(capsys, engine: str, out: Path, *argv) -> str:
    rc = openrft_main(["export", engine, "--out", str(out), *map(str, argv)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    return stdout


def test_verl_script_carries_the_reft_recipe(tmp_path, capsys):
    out = tmp_path / "reft"
    usage = export(capsys, "verl", out, "--recipe", RECIPES / "paper" / "reft_gsm8k.yaml")
    moved = tmp_path / "elsewhere"
    out.rename(moved)  # the script finds its files next to itself
    o = overrides(engine_args(moved / "run_verl.sh", tmp_path, "trainer.val_before_train=false", N_GPUS="4"))
    assert o["algorithm.adv_estimator"] == "gae" and o["actor_rollout_ref.model.path"] == "codellama/CodeLlama-7b-hf"
    assert o["actor_rollout_ref.actor.optim.lr"] == "3e-05" and o["critic.optim.lr"] == "6e-05"
    assert o["critic.model.path"] == "codellama/CodeLlama-7b-hf" and o["critic.model.lora_rank"] == "64"
    assert (o["algorithm.use_kl_in_reward"], o["algorithm.kl_ctrl.kl_coef"], o["algorithm.kl_penalty"]) == \
        ("true", "0.01", "k1") and o["actor_rollout_ref.actor.use_kl_loss"] == "false"
    assert (o["actor_rollout_ref.rollout.n"], o["actor_rollout_ref.rollout.temperature"]) == ("1", "1.0")
    assert o["data.max_response_length"] == "512" and int(o["data.max_prompt_length"]) % 64 == 0
    assert o["actor_rollout_ref.actor.ppo_epochs"] == "2" and o["data.train_batch_size"] == "32"
    assert (o["actor_rollout_ref.model.lora_rank"], o["actor_rollout_ref.model.lora_alpha"]) == ("64", "128")
    # ReFT's 300 epochs over GSM8K train: ceil(300 * 7473 / 32) steps; verl counts whole batches, 7473 // 32 a pass
    assert o["trainer.total_training_steps"] == "70060" and o["trainer.total_epochs"] == "301"
    assert o["data.train_files"] == str(moved / "train.parquet") and o["data.val_files"] == str(moved / "test.parquet")
    assert o["reward.custom_reward_function.path"] == str(moved / "openrft_reward.py")
    assert o["trainer.n_gpus_per_node"] == "4" and o["trainer.val_before_train"] == "false"
    reward = (moved / "openrft_reward.py").read_text()
    assert "'partial_credit': 0.1" in reward  # the recipe's reward settings
    assert "stages.sft" in usage and "merge_and_unload" in usage and "--model" in usage
    manifest = json.loads((moved / "openrft_export.json").read_text())
    assert manifest["launch"]["recipe"].endswith("reft_gsm8k.yaml") and manifest["launch"]["rl"]["ppo_epochs"] == 2
    rows = manifest["counts"]
    assert rows == {"train": 7473, "test": 1319}  # GSM8K's train and test splits, as 'openrft run' uses them


def test_openrlhf_script_carries_a_grpo_recipe_and_names_the_prm_it_cannot_take(tmp_path, capsys):
    recipe = RECIPES / "small" / "sft_rl_prm.yaml"
    usage = export(capsys, "openrlhf", tmp_path / "prm", "--recipe", recipe, "--set", "rl.kl_estimator=k2")
    f = flags(engine_args(tmp_path / "prm" / "run_openrlhf.sh", tmp_path))
    assert f["--algo.advantage.estimator"] == ["dr_grpo"] and f["--actor.adam.lr"] == ["0.0002"]
    assert f["--algo.kl.init_coef"] == ["0.01"] and "--algo.kl.use_loss" in f and f["--algo.kl.estimator"] == ["k2"]
    assert f["--rollout.n_samples_per_prompt"] == ["4"] and f["--rollout.temperature"] == ["0.7"]
    assert f["--rollout.max_new_tokens"] == ["96"] and f["--train.max_epochs"] == ["1"]
    assert f["--ds.lora.rank"] == ["8"] and f["--ds.lora.alpha"] == ["16"] and f["--rollout.batch_size"] == ["8"]
    assert f["--actor.model_name_or_path"] == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert int(f["--data.max_len"][0]) == int(json.loads((tmp_path / "prm" / "openrft_export.json").read_text())[
        "launch"]["prompt_tokens"]) + 96
    assert f["--reward.remote_url"] == [str(tmp_path / "prm" / "openrft_reward.py")]
    assert f["--actor.eps_clip_low_high"] == ["0.2", "0.2"] and "--critic.model_name_or_path" not in f
    assert "openrft prm serve" in usage and "runs/sft_rl_prm-small/<cell>/prm" in usage and "no step limit" in usage
    assert "rl.reward.prm" in (tmp_path / "prm" / "run_openrlhf.sh").read_text()

    export(capsys, "openrlhf", tmp_path / "with_url", "--recipe", recipe, "--prm-url", "http://gpu-box:8765/score")
    config = (tmp_path / "with_url" / "openrft_reward.py").read_text()
    assert "'prm_url': 'http://gpu-box:8765/score'" in config and "'alpha': 0.7" in config
    assert "rl.reward.prm" not in (tmp_path / "with_url" / "README.md").read_text()


def test_flags_win_over_the_recipe_and_set_overrides_it(tmp_path, capsys):
    export(capsys, "verl", tmp_path / "x", "--recipe", RECIPES / "small" / "sft_rl.yaml", "--set", "rl.lr=1e-5",
           "--set", "rl.estimator=gae", "--model", "/cluster/models/merged", "--alpha", "0.5", "--limit", "40")
    o = overrides(engine_args(tmp_path / "x" / "run_verl.sh", tmp_path))
    assert o["actor_rollout_ref.actor.optim.lr"] == "1e-05" and o["algorithm.adv_estimator"] == "gae"
    assert o["actor_rollout_ref.model.path"] == o["critic.model.path"] == "/cluster/models/merged"
    assert "'alpha': 0.5" in (tmp_path / "x" / "openrft_reward.py").read_text()


def test_without_a_recipe_the_script_carries_openrft_rls_defaults(tmp_path, capsys):
    usage = export(capsys, "verl", tmp_path / "d", "--data", "arithmetic", "--limit", "3")
    o = overrides(engine_args(tmp_path / "d" / "run_verl.sh", tmp_path))
    assert o["algorithm.adv_estimator"] == "grpo" and o["actor_rollout_ref.actor.kl_loss_type"] == "k3"
    assert o["data.train_batch_size"] == "3" and "each step takes 3" in usage  # fewer prompts than prompts_per_step


@pytest.mark.parametrize("argv, message", [
    (["--recipe", RECIPES / "small" / "sft.yaml"], "has no rl stage"),
    (["--data", "arithmetic", "--set", "rl.lr=1"], "--set overrides recipe keys: give --recipe"),
    (["--recipe", RECIPES / "small" / "sft_rl.yaml", "--set", "rl.stpes=2"], "did you mean steps"),
    (["--recipe", RECIPES / "small" / "sft_rl.yaml", "--set", "rl.estimator=package.mod:fn"], "estimator"),
])
def test_bad_recipes_are_refused_in_one_line(tmp_path, capsys, argv, message):
    rc = openrft_main(["export", "verl", "--out", str(tmp_path / "bad"), *map(str, argv)])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
