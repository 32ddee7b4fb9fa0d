"""Smoke test of bench/prm_settings.py on a tiny model: configs train on one labels file and are ranked on another."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from openrft.rewards.labels import StepExample, write_step_examples

BENCH = Path(__file__).resolve().parents[2] / "bench" / "prm_settings.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_prm_settings", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _examples(n: int, offset: int) -> list[StepExample]:
    return [StepExample(f"Question {i}", [f"{'Yes' if i % 2 else 'No'}, step", "so done"], [float(i % 2), 0.5])
            for i in range(offset, offset + n)]


def test_prm_settings_bench_compares_configs_on_held_out_steps(tmp_path, tiny_model_dir, capsys):
    prm = tmp_path / "prm"
    write_step_examples(prm / "labels" / "steps.jsonl", _examples(12, 0))
    write_step_examples(prm / "quality" / "steps.jsonl", _examples(6, 100))
    rows = _load().main(["--prm-dir", str(prm), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"),
                         "--config", '{"epochs": 1, "batch_size": 4, "device": "cpu"}',
                         "--config", '{"epochs": 1, "batch_size": 4, "label_mode": "hard", "device": "cpu"}'])
    assert [r["config"] for r in rows][0] == "constant 0.5" and len(rows) == 3
    assert rows[0]["auc"] == 0.5 and all(r["steps"] == 12 for r in rows)
    assert all(r["auc"] is None or 0.0 <= r["auc"] <= 1.0 for r in rows[1:])
    assert "AUC" in capsys.readouterr().out
