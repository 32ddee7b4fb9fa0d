"""load_run: a run directory read back with the values its stages wrote; clear errors for what is not a run."""

from __future__ import annotations

import json

import pytest
from report_fixtures import SUM_SCRIPT, CellSpec, make_run, read_json

from openrft.report import Cell, IncompatibleRunError, Run, RunDirError, StageInfo, eval_result_from_dict, load_run


def test_load_run_reads_cells_stages_and_evaluations(two_task_run):
    run = load_run(two_task_run)
    assert isinstance(run, Run) and (run.name, run.method, run.status) == ("rft", "SFT+RL(PRM)", "finished")
    assert run.stages == ["sft", "rl", "eval"] and run.data_sizes == [25]
    assert [c.id for c in run.cells] == ["sum", "prod"]
    cell = run.cells[0]
    assert isinstance(cell, Cell) and cell.evaluated and cell.eval_note is None
    assert cell.stages["rl"] == StageInfo("finished", 3725.0)
    [result] = cell.eval_results
    assert result.to_dict() == read_json(two_task_run / "sum" / "eval" / "report.json")[0]
    assert result.tasks[0].rerank_at_k == 1.0 and result.tasks[0].accuracy == pytest.approx(0.5)
    assert [r["step"] for r in cell.rl_metrics()] == [1, 2, 3, 4]
    assert cell.sft_losses() == [(1, 2.0), (2, 1.0), (3, pytest.approx(2 / 3))]
    assert [r["id"] for r in cell.completions()] == ["sum/test/0", "sum/test/1"]
    assert cell.eval_finished_at is not None


def test_eval_result_round_trips_through_report_json(two_task_run):
    raw = read_json(two_task_run / "prod" / "eval" / "report.json")[0]
    assert eval_result_from_dict(raw).to_dict() == raw


def test_cell_without_evaluation_is_reported_not_fatal(tmp_path, data):
    path, samples = data["sum"]
    run_dir = make_run(tmp_path / "runs", "partial", "SFT", [("sum", CellSpec(path, None, None, sft_steps=2), samples)],
                       status="failed")
    [cell] = load_run(run_dir).cells
    assert not cell.evaluated and cell.eval_results == []
    assert "not evaluated" in cell.eval_note and "report.json is missing" in cell.eval_note
    assert "eval stage failed" in cell.eval_note
    (run_dir / "sum" / "eval").mkdir()
    (run_dir / "sum" / "eval" / "report.json").write_text("[{\"label\": ", encoding="utf-8")  # torn
    [cell] = load_run(run_dir).cells
    assert not cell.evaluated and "unreadable" in cell.eval_note


def test_not_a_run_directory_says_what_makes_one(tmp_path):
    with pytest.raises(RunDirError, match=r"not a run directory \(no run.json\).*openrft run") as err:
        load_run(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(RunDirError, match="no such directory"):
        load_run(tmp_path / "nope")


def test_newer_format_version_is_an_incompatible_run(tmp_path, data):
    path, samples = data["sum"]
    run_dir = make_run(tmp_path / "runs", "future", "SFT", [("sum", CellSpec(path, None, SUM_SCRIPT), samples)],
                       format_version=2)
    with pytest.raises(IncompatibleRunError, match="made by an incompatible openrft version.*rerun it or use that"):
        load_run(run_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.pop("method"), "field 'method' is missing"),
    (lambda d: d.update(cells={}), "field 'cells' has the wrong type"),
    (lambda d: d["cells"][0].update(data_size="25"), r"cells\[0\]: field 'data_size' must be an integer"),
    (lambda d: d["cells"][0].pop("dir"), r"cells\[0\]: field 'dir' is missing"),
])
def test_malformed_run_json_names_the_field(tmp_path, data, edit, message):
    path, samples = data["sum"]
    run_dir = make_run(tmp_path / "runs", "bad", "SFT", [("sum", CellSpec(path, None, None), samples)])
    raw = read_json(run_dir / "run.json")
    edit(raw)
    (run_dir / "run.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(RunDirError, match=message):
        load_run(run_dir)
    (run_dir / "run.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RunDirError, match=r"run.json:1: not valid JSON"):
        load_run(run_dir)
