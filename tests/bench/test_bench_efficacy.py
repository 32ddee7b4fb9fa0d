"""Smoke test of bench/efficacy.py: the recipes chain, stages are reused across methods, the table prints."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "efficacy.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_efficacy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_efficacy_bench_runs_three_rows_on_a_tiny_model(tmp_path, tiny_model_dir, capsys):
    tiny = ["train_size=4", "test_size=3", "eval.n=2", "eval.max_new_tokens=8", "synthesize.budget=2",
            "synthesize.rounds=[2]", "synthesize.max_new_tokens=8", "sft.epochs=1", "rl.steps=1",
            "rl.prompts_per_step=2", "rl.n_samples=2", "rl.max_new_tokens=8", "rl.tensorboard=false"]
    argv = ["--methods", "vanilla,sft,sft_rl", "--runs-dir", str(tmp_path), "--quiet",
            "--set", f"model={tiny_model_dir}"] + [a for kv in tiny for a in ("--set", kv)]
    summary = _load().main(argv)
    out = capsys.readouterr().out
    assert [r["method"] for r in summary["rows"]] == ["Vanilla", "SFT", "SFT+RL"]
    assert "sft > vanilla" in summary["checks"] and "total wall time" in out
    assert all(0.0 <= r["accuracy"] <= 1.0 and len(r["per_run"]) == 2 for r in summary["rows"])
    sft_rl = json.loads((tmp_path / "sft_rl-small" / "run.json").read_text())["cells"][0]["stages"]
    assert sft_rl["synthesize"]["status"] == "skipped" and sft_rl["sft"]["status"] == "skipped"  # reused
    assert summary["rows"][2]["reward_curve"] and (tmp_path / "rewards.png").is_file()
    assert json.loads((tmp_path / "efficacy.json").read_text())["rows"][0]["name"] == "vanilla"
