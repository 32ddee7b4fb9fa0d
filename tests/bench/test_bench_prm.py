"""Smoke run of bench/prm.py with tiny settings; no timing is asserted, the scores must agree."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "prm.py"


def test_prm_bench_runs_and_methods_agree(tiny_model_dir, capsys):
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("bench_prm", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--model", str(tiny_model_dir), "--completions", "3", "--steps", "4", "--repeats", "1",
                          "--batch-size", "2", "--device", "cpu"])
    assert result["completions"] == 3 and result["same_scores"]
    forwards = [row["forwards"] for row in result["rows"].values()]
    assert forwards == [12, 3, 2]
    assert all(row["speedup"][0] > 0 for row in result["rows"].values())
    assert "same scores: yes" in capsys.readouterr().out
