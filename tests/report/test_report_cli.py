"""``openrft report`` and ``openrft compare``: outputs, exit codes, one-line errors naming the path."""

from __future__ import annotations

import json

from report_fixtures import PROD_SCRIPT, SUM_SCRIPT, CellSpec, make_run, read_json

import pytest

from openrft.cli.main import main as cli


@pytest.mark.parametrize("command", ["report", "compare"])
def test_subcommands_answer_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli([command, "--help"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"usage: openrft {command}")


def test_report_cli_writes_the_report(two_task_run, capsys):
    assert cli(["report", str(two_task_run), "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert str(two_task_run / "report.md") in out and str(two_task_run / "report.html") in out
    assert (two_task_run / "report.md").read_text().count("### Example ") == 1


def test_report_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert cli(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"openrft report: {tmp_path}: not a run directory")
    assert cli(["report", str(tmp_path), "--examples", "-1"]) == 2


def test_compare_cli_prints_markdown_and_writes_md_and_json(tmp_path, data, capsys):
    (sp, ss), (pp, ps) = data["sum"], data["prod"]
    a = make_run(tmp_path / "runs", "a", "Vanilla", [("sum", CellSpec(sp, None, SUM_SCRIPT), ss)], stages=("eval",))
    b = make_run(tmp_path / "runs", "b", "SFT", [("prod", CellSpec(pp, None, PROD_SCRIPT), ps)], stages=("eval",))
    out = tmp_path / "cmp" / "table.md"
    assert cli(["compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| Method | sum | prod | Avg |" in printed and "| Vanilla | 0.500 * | - | 0.500 |" in printed
    assert out.read_text() == printed
    saved = read_json(out.with_suffix(".json"))
    assert saved["header"] == ["Method", "sum", "prod", "Avg"] and len(saved["entries"]) == 2


def test_compare_cli_incompatible_run_exits_2(tmp_path, data, capsys):
    sp, ss = data["sum"]
    run = make_run(tmp_path / "runs", "future", "SFT", [("sum", CellSpec(sp, None, SUM_SCRIPT), ss)],
                   stages=("eval",), format_version=7)
    assert cli(["compare", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(run / "run.json") in err and "incompatible openrft version" in err
    raw = read_json(run / "run.json")
    raw["format_version"] = 1
    (run / "run.json").write_text(json.dumps(raw))
    assert cli(["compare", str(run), "--out", str(tmp_path)]) == 2  # --out names a directory
    assert "is a directory" in capsys.readouterr().err
