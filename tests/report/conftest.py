"""Fixtures of the report tests: fake run directories (see report_fixtures.py)."""

from __future__ import annotations

import pytest
from report_fixtures import PROD, PROD_SCRIPT, SUM, SUM_SCRIPT, CellSpec, make_run, numeric_samples, write_samples


@pytest.fixture
def data(tmp_path):
    """Test samples of two tasks saved as JSONL files: ``{task: (path, samples)}``."""
    out = {}
    for task, qa in (("sum", SUM), ("prod", PROD)):
        samples = numeric_samples(task, qa)
        out[task] = (write_samples(tmp_path, task, samples), samples)
    return out


@pytest.fixture
def two_task_run(tmp_path, data):
    """A finished SFT+RL(PRM) run over two tasks at one data size, reranked by a PRM, with RL and SFT metrics."""
    (sum_path, sum_s), (prod_path, prod_s) = data["sum"], data["prod"]
    return make_run(tmp_path / "runs", "rft", "SFT+RL(PRM)", [
        ("sum", CellSpec(sum_path, 25, SUM_SCRIPT, rl_steps=4, sft_steps=3, rerank=True), sum_s),
        ("prod", CellSpec(prod_path, 25, PROD_SCRIPT, rl_steps=4, sft_steps=3, rerank=True), prod_s),
    ])
