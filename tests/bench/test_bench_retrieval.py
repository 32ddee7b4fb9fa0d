"""Smoke run of bench/retrieval.py on one task with a few questions; no timing or quality is asserted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "retrieval.py"


def test_retrieval_bench_runs_on_one_task(capsys):
    spec = importlib.util.spec_from_file_location("bench_retrieval", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--tasks", "chemical_calculation", "--limit", "8", "--single-queries", "2",
                          "--device", "cpu"])
    assert result["questions"] == 8 and result["tasks"] == ["chemical_calculation"]
    assert result["duplicates_excluded"] == 8
    for row in result["rows"].values():
        for key in ("edit_r1", "edit_r3", "shuffle+edit_r1", "shuffle+edit_r3"):
            assert 0.0 <= row[key] <= 1.0
        assert row["edit_r1"] <= row["edit_r3"]
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "chemical_calculation" in printed and "ms/query" in printed
