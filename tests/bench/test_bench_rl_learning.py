"""Smoke test of bench/rl_learning.py: before/after evaluation, the reward curve, the summary file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "rl_learning.py"


def test_rl_learning_bench_runs_on_a_tiny_model(tiny_model_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_rl_learning", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main(["--model", str(tiny_model_dir), "--train", "4", "--eval-items", "3", "--eval-n", "2",
                           "--steps", "2", "--prompts", "2", "-n", "2", "--max-new-tokens", "6",
                           "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert len(summary["curve"]) == 2 and len(summary["after"]["per_run"]) == 2
    assert "rollout reward per step" in out and "held-out" in out
    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["steps"] == 2
    assert (tmp_path / "curve.png").is_file()
