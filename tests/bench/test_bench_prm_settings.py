"""Smoke test of bench/prm_settings.py on a tiny model: configs train on one labels file and are ranked on another."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from openrft.reward_models.labels import StepExample, write_step_examples

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
                         "--config", '{"epochs": 1, "batch_size": 4, "label_mode": "hard", "device": "cpu"}',
                         "--config", '{"epochs": 1, "batch_size": 4, "held_out": 0.25, "device": "cpu"}'])
    assert [r["config"] for r in rows][0] == "constant 0.5" and len(rows) == 4
    held = [json.loads((tmp_path / "out" / f"config{i}" / "metrics.json").read_text())["held_out_solutions"]
            for i in (0, 2)]
    assert held == [0, 3]  # no questions held out unless the config asks, as the prm stage holds out 10%
    assert rows[0]["auc"] == 0.5 and all(r["steps"] == 12 for r in rows)
    assert all(r["auc"] is None or 0.0 <= r["auc"] <= 1.0 for r in rows[1:])
    assert "AUC" in capsys.readouterr().out


def test_prm_settings_bench_scores_a_checkpoint_and_picks_among_held_out_replies(tmp_path, tiny_model_dir, capsys):
    bench = _load()
    prm = tmp_path / "prm"
    write_step_examples(prm / "labels" / "steps.jsonl", _examples(8, 0))
    write_step_examples(prm / "quality" / "steps.jsonl", _examples(4, 100))
    # the held-out questions' replies: 4 per bundled arithmetic test question, one of them right
    replies = [{"id": "arithmetic/test/0",
                "texts": ["81 + 13 = 94\nThe answer is 94"] + ["81 + 13 = 95\nThe answer is 95"] * 3},
               {"id": "arithmetic/test/1",
                "texts": ["10 + 76 = 87\nThe answer is 87"] * 3 + ["10 + 76 = 86\nThe answer is 86"]}]
    (prm / "quality" / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replies))
    trained = bench.main(["--prm-dir", str(prm), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"),
                          "--config", '{"epochs": 1, "batch_size": 4, "device": "cpu", "extra_labels": ["%s"]}'
                          % (prm / "quality" / "steps.jsonl")])
    assert trained[1]["train_steps"] == 8 * 2 + 4 * 2  # the extra labels joined the training set
    checkpoint = tmp_path / "out" / "config0" / "checkpoint"
    rows = bench.main(["--prm-dir", str(prm), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"),
                       "--checkpoint", str(checkpoint), "--data", "arithmetic"])
    assert rows[1]["config"] == f"checkpoint {checkpoint}"
    assert rows[1]["auc"] == trained[1]["auc"]  # the same PRM scores the same held-out steps the same way
    # majority voting picks the wrong answer on both questions; rerank and weighted voting are accuracies
    assert rows[1]["maj@4"] == 0.0
    assert all(0.0 <= rows[1][f"{agg}:{what}@4"] <= 1.0
               for agg in ("min", "last", "mean") for what in ("rerank", "wmaj"))
    # both questions have one right and three wrong replies: the within-question AUC is measured on each
    assert all(0.0 <= rows[1][f"{agg}:reply_auc_in_question"] <= 1.0 for agg in ("min", "last", "mean"))
    out = capsys.readouterr().out
    assert "best-of-k on the held-out replies (maj@4 0.000)" in out and "wmaj@4" in out


def test_prefix_sharing_counts_each_question_prefix_once(tmp_path):
    prm = tmp_path / "prm"
    same = [StepExample("Q", ["a", "b", "c"], [1.0, 1.0, 1.0], meta={"sample_id": "q1"})] * 2
    other = [StepExample("Q", ["a", "x", "c"], [1.0, 0.0, 0.0], meta={"sample_id": "q1"}),
             StepExample("R", ["a", "b", "c"], [1.0, 1.0, 1.0], meta={"sample_id": "q2"})]
    write_step_examples(prm / "labels" / "steps.jsonl", same + other)
    # 4 replies x 2 prefixes alone; shared: q1 "a", "a\nb", "a\nx" and q2 "a", "a\nb"
    assert _load().prefix_sharing(prm) == {"training": {"alone": 8, "shared": 5}}


def test_prm_settings_bench_trains_on_labels_with_reply_continuations(tmp_path, tiny_model_dir):
    prm = tmp_path / "prm"
    meta = {"sample_id": "q0", "n_rollouts": 4}
    labelled = [StepExample("Question 0", ["a", "b", "so 1"], [0.5, 0.25, 1.0], meta=meta | {"completion_correct": 1}),
                StepExample("Question 0", ["a", "c", "so 2"], [0.5, 0.0, 0.0], meta=meta | {"completion_correct": 0})]
    write_step_examples(prm / "labels" / "steps.jsonl", labelled)
    # a labelling made before share_prefixes existed rolled out each reply's prefixes apart
    (prm / "labels" / "manifest.json").write_text(json.dumps({"config": {"n_rollouts": 4}}))
    write_step_examples(prm / "quality" / "steps.jsonl", _examples(4, 100))
    rows = _load().main(["--prm-dir", str(prm), "--model", str(tiny_model_dir), "--out", str(tmp_path / "out"),
                         "--config", '{"epochs": 1, "batch_size": 2, "device": "cpu", "reply_continuations": true}'])
    assert json.loads(rows[1]["config"])["reply_continuations"] is True
    from openrft.reward_models.labels import read_step_examples

    trained_on = read_step_examples(tmp_path / "out" / "config0-labels" / "labels0.jsonl")
    # "a": both replies' 4 rollouts (2 right each) and the two replies themselves: 5 of 10; "a, b": 1 + 1 of 5
    assert [e.labels for e in trained_on] == [(0.5, 0.4, 1.0), (0.5, 0.0, 0.0)]
