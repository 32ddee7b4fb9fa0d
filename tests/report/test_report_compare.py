"""compare: method x task table over finished runs, best per column, missing evaluations, duplicate methods."""

from __future__ import annotations

import json
import os
import time

import pytest
from report_fixtures import PROD_SCRIPT, SUM_SCRIPT, CellSpec, make_run

from openrft.report import RunDirError, compare
from openrft.report.run import load_run

WRONG_SUM = {q: ["\\boxed{0}"] * 3 for q in SUM_SCRIPT}
RIGHT_PROD = {q: ["\\boxed{8}" if "2 * 4" in q else "\\boxed{9}"] * 3 for q in PROD_SCRIPT}


def _run(tmp_path, data, name, method, sum_script, prod_script, status="finished"):
    (sp, ss), (pp, ps) = data["sum"], data["prod"]
    return make_run(tmp_path / "runs", name, method, [("sum", CellSpec(sp, None, sum_script), ss),
                                                       ("prod", CellSpec(pp, None, prod_script), ps)],
                    status=status, stages=("eval",))


def _set_eval_finished(run_dir, cell, when):
    path = run_dir / cell / "eval" / "manifest.json"
    m = json.loads(path.read_text())
    m["finished"] = when
    path.write_text(json.dumps(m))


def test_best_per_column_is_marked_and_rows_are_methods(tmp_path, data):
    vanilla = _run(tmp_path, data, "vanilla", "Vanilla", WRONG_SUM, PROD_SCRIPT)
    sft = _run(tmp_path, data, "sft", "SFT", SUM_SCRIPT, RIGHT_PROD)
    table = compare([vanilla, sft])
    assert table.header == ["Method", "sum", "prod", "Avg"]
    assert table.rows == [["Vanilla", "0.000", "0.833", "0.417"], ["SFT", "0.500 *", "1.000 *", "0.750 *"]]
    md = table.markdown()
    assert "| Method | sum | prod | Avg |" in md and "| SFT | 0.500 * | 1.000 * | 0.750 * |" in md
    d = table.to_dict()
    assert d["rows"] == table.rows and {(e["method"], e["task"], e["run"]) for e in d["entries"]} == {
        ("Vanilla", "sum", "vanilla"), ("Vanilla", "prod", "vanilla"), ("SFT", "sum", "sft"), ("SFT", "prod", "sft")}
    json.dumps(d)


def test_missing_evaluation_leaves_a_dash_and_a_note(tmp_path, data):
    vanilla = _run(tmp_path, data, "vanilla", "Vanilla", WRONG_SUM, PROD_SCRIPT)
    sft = _run(tmp_path, data, "sft", "SFT", SUM_SCRIPT, None)
    table = compare([vanilla, sft])
    assert table.rows == [["Vanilla", "0.000", "0.833 *", "0.417"], ["SFT", "0.500 *", "-", "0.500 *"]]
    assert any(n.startswith("sft: cell prod") and "not evaluated" in n for n in table.notes)
    assert "SFT: Avg covers 1 of 2 tasks" in table.notes
    assert "- SFT: Avg covers 1 of 2 tasks" in table.markdown()


def test_same_method_twice_uses_the_latest_finished_and_says_so(tmp_path, data):
    old = _run(tmp_path, data, "sft-old", "SFT", WRONG_SUM, PROD_SCRIPT)
    new = _run(tmp_path, data, "sft-new", "SFT", SUM_SCRIPT, RIGHT_PROD)
    now = time.time()
    for cell in ("sum", "prod"):
        _set_eval_finished(old, cell, now)
        _set_eval_finished(new, cell, now - 3600)
    table = compare([new, old])  # the older one named first: order on the command line does not decide
    assert table.rows == [["SFT", "0.000", "0.833", "0.417"]]
    assert "SFT / sum: from sft-old (latest finished); also in sft-new" in table.notes
    assert {e.run for e in table.entries} == {"sft-old"}


def test_unfinished_runs_are_left_out(tmp_path, data):
    done = _run(tmp_path, data, "done", "SFT", SUM_SCRIPT, PROD_SCRIPT)
    running = _run(tmp_path, data, "busy", "SFT+RL", SUM_SCRIPT, PROD_SCRIPT, status="running")
    table = compare([done, running])
    assert [r[0] for r in table.rows] == ["SFT"]
    assert any(n.startswith("busy: left out, its status is 'running'") for n in table.notes)
    with pytest.raises(RunDirError, match="nothing to compare: no finished run"):
        compare([running])


def test_several_data_sizes_of_a_method_get_one_row_each(tmp_path, data):
    sp, ss = data["sum"]
    run = make_run(tmp_path / "runs", "sizes", "SFT", [
        ("sum-n25", CellSpec(sp, 25, WRONG_SUM), ss), ("sum-n50", CellSpec(sp, 50, SUM_SCRIPT), ss)],
        stages=("eval",))
    vanilla = _run(tmp_path, data, "vanilla", "Vanilla", WRONG_SUM, PROD_SCRIPT)
    table = compare([run, vanilla])
    assert [r[0] for r in table.rows] == ["SFT (n=25)", "SFT (n=50)", "Vanilla"]
    assert table.rows[1][1] == "0.500 *"


def test_compare_errors_name_the_path(tmp_path):
    with pytest.raises(RunDirError, match=f"{tmp_path}: not a run directory"):
        compare([tmp_path])
    with pytest.raises(RunDirError, match="no run directory given"):
        compare([])


def test_eval_finish_time_falls_back_to_the_report_file(tmp_path, data):
    run_dir = _run(tmp_path, data, "r", "SFT", SUM_SCRIPT, None)
    os.remove(run_dir / "sum" / "eval" / "manifest.json")
    [cell, _] = load_run(run_dir).cells
    assert cell.eval_finished_at == pytest.approx((run_dir / "sum" / "eval" / "report.json").stat().st_mtime)
