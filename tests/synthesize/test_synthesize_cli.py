"""``openrft synthesize`` end to end: the CLI on the tiny model, and the bundled SmolLM2 on real questions."""

from __future__ import annotations

import json

import pytest

from openrft.cli.main import main as cli
from openrft.data.loaders import load_samples, save_samples
from openrft.models.backends.hf import TransformersGenerator
from openrft.synthesize import SynthesizeConfig, load_traces, run_synthesize
from openrft.tasks import task_for


def test_cli_writes_traces_and_prints_a_per_task_table(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "train.jsonl"
    save_samples(load_samples("svamp", limit=2) + load_samples("sciknoweval/chemical_calculation", split="train",
                                                               limit=1), data)
    out = tmp_path / "syn"
    rc = cli(["synthesize", "--data", str(data), "--model", str(tiny_model_dir), "--budget", "3", "--rounds", "2",
              "--max-new-tokens", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "svamp" in printed and "chemical_calculation" in printed and "All" in printed
    records = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["attempts"] == 3 and r["teacher"] == str(tiny_model_dir) for r in records)
    assert len(load_traces(out)) == 3
    stats = json.loads((out / "manifest.json").read_text())["stats"]
    assert stats["samples"] == 3 and stats["completions_generated"] == 9

    with pytest.raises(SystemExit):
        cli(["synthesize", "--data", str(data), "--rounds", "2,x"])
    assert cli(["synthesize", "--data", str(tmp_path / "missing.jsonl"), "--model", str(tiny_model_dir)]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_bundled_smollm2_on_svamp(smollm2, tmp_path):
    model, tokenizer = smollm2
    generator = TransformersGenerator(model, tokenizer, batch_size=16)
    samples = load_samples("svamp", limit=3)
    config = SynthesizeConfig(budget=4, rounds=(2,), temperature=0.7, max_new_tokens=48, seed=0,
                              model="smollm2-135m", accept_truncated=True)
    res = run_synthesize(samples, generator, config, tmp_path, show_progress=False)
    assert [r["id"] for r in res.records] == [s.id for s in samples]
    for sample, rec in zip(samples, res.records):
        task = task_for(sample)
        assert 1 <= rec["attempts"] <= 4 and rec["teacher"] == "smollm2-135m"
        assert len(rec["traces"]) == 1
        text = rec["traces"][0]["text"]
        assert task.grade(text, sample).correct, "every kept trace, sampled or fallback, passes the grader"
        assert rec["fallback"] == (rec["correct"] == 0)
        if rec["fallback"]:
            assert text == task.render_answer(sample) and rec["attempts"] == 4
        else:
            assert rec["attempts"] == 2 * -(-rec["first_correct"] // 2)  # closed in the round of the first hit
    assert len(load_traces(tmp_path)) == 3
    assert res.stats["completions_per_s"] > 0
