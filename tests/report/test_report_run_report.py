"""write_run_report: Markdown and HTML with the table values, valid PNG plots, escaped text,
and a report without plots when matplotlib is missing."""

from __future__ import annotations

import sys

import pytest
from report_fixtures import PROD_SCRIPT, Q_SCRIPT, SUM_SCRIPT, CellSpec, make_run

from openrft.report import write_run_report
from openrft.report.document import Code, Heading, render_html, render_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000, path
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 200 and height > 200


def test_report_holds_tables_plots_and_examples(two_task_run):
    md_path, html_path = write_run_report(two_task_run)
    assert (md_path, html_path) == (two_task_run / "report.md", two_task_run / "report.html")
    md, page = md_path.read_text(), html_path.read_text()
    # accuracy (Table 1 layout, mean ± std over the 3 sampled runs) and the PRM rerank@3 row
    assert "| Method | sum | prod | Avg |" in md
    assert "| SFT+RL(PRM) | 0.500 ±0.500 | 0.833 ±0.289 | 0.667 |" in md
    assert "| SFT+RL(PRM) rerank@3 | 1.000 * | 1.000 * | 1.000 * |" in md
    assert "maj@3" in md and "| sum | 2 | 0.500 ± 0.500 | 0.500 | 1.000 | 1.000 |" in md
    # header facts and stage wall times
    assert "`SFT+RL(PRM)`" in md and "`recipes/small/sft_rl_prm.yaml`" in md and "`finished`" in md
    assert "| sum |" in md and "1 min 2 s | 1 h 2 min | 4.2 s | 1 h 3 min |" in md
    for text in ("0.500 ±0.500", "0.833 ±0.289", "0.667", "SFT+RL(PRM) rerank@3", "1 h 2 min"):
        assert text in page
    # plots: one per cell for RL and SFT, per-task bars (two tasks); no data-size curve (one size)
    names = {"accuracy_per_task.png", "sum-rl.png", "sum-sft_loss.png", "prod-rl.png", "prod-sft_loss.png"}
    assert {p.name for p in (two_task_run / "plots").iterdir()} == names
    for name in names:
        _assert_png(two_task_run / "plots" / name)
        assert f"](plots/{name})" in md and f'src="plots/{name}"' in page
    # examples: question found in the task's test split, first completion, verdict, PRM step scores
    assert md.count("### Example ") == 3
    assert "2 + 5 = 7 ok\nSo \\boxed{7}." in md and "sample 1 of 3: correct" in md
    assert "| 1 | 1.000 | 2 + 5 = 7 ok |" in md and "| 2 | 0.200 | So \\boxed{7}. |" in md


def test_html_escapes_questions_and_completions(two_task_run):
    _, html_path = write_run_report(two_task_run)
    page = html_path.read_text()
    assert "<script>" not in page and "alert(" in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; What is 2 + 5?" in page
    md = (two_task_run / "report.md").read_text()
    assert f"```text\n{Q_SCRIPT}\n```" in md  # verbatim, inside a code fence only


def test_document_rendering_escapes_markup_everywhere():
    blocks = [Heading(1, "run <b>x</b>"), Code("```\n<img src=x onerror=alert(1)>")]
    page = render_html(blocks, "<title>")
    assert "<b>" not in page and "<img src=x" not in page and "<title><title>" not in page
    md = render_markdown(blocks)
    assert md.startswith("# run &lt;b&gt;x&lt;/b&gt;") and "````text\n```\n<img" in md


def test_several_data_sizes_plot_accuracy_against_training_samples(tmp_path, data):
    (sum_path, sum_s), (prod_path, prod_s) = data["sum"], data["prod"]
    worse = {q: [c.replace("\\boxed{7}", "\\boxed{9}").replace("\\boxed{6}", "\\boxed{1}") for c in cs]
             for q, cs in SUM_SCRIPT.items()}
    run_dir = make_run(tmp_path / "runs", "sizes", "SFT", [
        ("sum-n25", CellSpec(sum_path, 25, worse), sum_s), ("prod-n25", CellSpec(prod_path, 25, PROD_SCRIPT), prod_s),
        ("sum-n50", CellSpec(sum_path, 50, SUM_SCRIPT), sum_s), ("prod-n50", CellSpec(prod_path, 50, None), prod_s),
    ], stages=("sft", "eval"))
    md_path, _ = write_run_report(run_dir, examples=0)
    md = md_path.read_text()
    assert "| SFT (n=25) | 0.000 ±0.000 | 0.833 ±0.289 * | 0.417 |" in md
    assert "| SFT (n=50) | 0.500 ±0.500 * | - | 0.500 * |" in md
    assert "SFT (n=50): Avg covers 1 of 2 tasks" in md
    assert "### Not evaluated" in md and "| prod-n50 |" in md and "report.json is missing" in md
    assert "Example completions" not in md
    for name in ("accuracy_vs_data_size.png", "accuracy_per_task.png"):
        _assert_png(run_dir / "plots" / name)
    assert "](plots/accuracy_vs_data_size.png)" in md


def test_without_matplotlib_the_report_says_so(two_task_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    md_path, html_path = write_run_report(two_task_run)
    md = md_path.read_text()
    assert "Plots skipped: matplotlib is not installed" in md and "![" not in md
    assert "matplotlib is not installed" in html_path.read_text()
    assert not (two_task_run / "plots").exists()
    assert "| SFT+RL(PRM) | 0.500 ±0.500 | 0.833 ±0.289 | 0.667 |" in md


def test_unfinished_run_without_any_evaluation_still_reports(tmp_path, data):
    path, samples = data["sum"]
    run_dir = make_run(tmp_path / "runs", "early", "SFT+RL", [("sum", CellSpec(path, None, None, rl_steps=2), samples)],
                       status="running", stages=("rl", "eval"))
    md = write_run_report(run_dir)[0].read_text()
    assert "This run is running" in md and "No cell of this run has been evaluated yet." in md
    assert "No completions stored" in md and "| sum |" in md and "failed (0.5 s)" in md
    _assert_png(run_dir / "plots" / "sum-rl.png")


@pytest.mark.parametrize("question_stored", [True, False])
def test_example_question_comes_from_the_record_or_the_dataset(two_task_run, question_stored):
    from openrft.core.rundir import JsonlStore

    store = JsonlStore(two_task_run / "sum" / "eval" / "completions.jsonl")
    records = store.load()
    if question_stored:
        for r in records.values():
            r["question"] = "stored question text"
        store.rewrite(records.values())
    else:  # an older completions.jsonl without questions, and the cell's task no longer loads
        import json

        for r in records.values():
            r.pop("question", None)
        store.rewrite(records.values())
        raw = json.loads((two_task_run / "run.json").read_text())
        raw["cells"][0]["task"] = str(two_task_run / "gone.jsonl")
        (two_task_run / "run.json").write_text(json.dumps(raw))
    md = write_run_report(two_task_run)[0].read_text()
    if question_stored:
        assert "stored question text" in md
    else:
        assert "Question: not stored in completions.jsonl and not found" in md
