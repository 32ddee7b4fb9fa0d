"""Reading traces.jsonl into SFT examples: fallbacks, malformed lines, and the errors a user can act on."""

from __future__ import annotations

import json

import pytest
from sft_fixtures import record, short_samples, trace_for, write_traces

from openrft.core.rundir import StageInputError
from openrft.sft.dataset import LoadReport, build_dataset, load_sft_examples, to_rows
from openrft.tasks import task_for


def test_loads_one_example_per_trace_and_keeps_or_drops_fallbacks(traces_file):
    examples = load_sft_examples(traces_file)
    assert [e.sample.id for e in examples] == [f"add/{i}" for i in range(8)]
    assert [e.fallback for e in examples] == [False] * 7 + [True]
    last = examples[-1]
    assert last.trace == task_for(last.sample).render_answer(last.sample) == "The answer is \\boxed{%s}." % last.sample.answer
    assert examples[0].trace == trace_for(examples[0].sample) and examples[0].line == 1

    kept = load_sft_examples(traces_file, include_fallback=False)
    assert len(kept) == 7 and not any(e.fallback for e in kept)


def test_rows_are_trl_conversational_prompt_completion_built_by_the_task(traces_file):
    examples = load_sft_examples(traces_file)
    shots = short_samples(10)[8:]
    rows = to_rows(examples, examples_for=lambda s: shots)
    for ex, row in zip(examples, rows):
        assert row["prompt"] == task_for(ex.sample).messages(ex.sample, shots)
        assert row["completion"] == [{"role": "assistant", "content": ex.trace}]
    assert len(rows[0]["prompt"]) == 5  # two few-shot Q/A turns, then the question
    ds = build_dataset(examples)
    assert ds.column_names == ["prompt", "completion"] and len(ds) == 8
    assert ds[0]["prompt"] == task_for(examples[0].sample).messages(examples[0].sample)


def test_several_traces_per_sample_deduplicated_and_capped(tmp_path):
    s = short_samples(1)[0]
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(record(s, ["one", "two", "one", "  ", "three"])) + "\n")
    assert [e.trace for e in load_sft_examples(path)] == ["one", "two", "three"]
    assert [e.trace for e in load_sft_examples(path, max_traces_per_sample=2)] == ["one", "two"]


def test_malformed_lines_are_skipped_and_reported(tmp_path):
    path = write_traces(tmp_path / "t.jsonl", short_samples(3), lines=[
        '{"id": "x", "sample": {"id": "x"}, "traces": []}',  # sample lacks fields
        '{"id": "y", "traces": [{"text": "a"}]}',  # no sample
        '{"id": "add/0", "sample": ',  # torn last line
    ])
    report = LoadReport()
    examples = load_sft_examples(path, report=report)
    assert len(examples) == 3
    assert [m.split(":")[0] for m in report.malformed] == ["line 4", "line 5", "line 6"]
    assert "field 'sample'" in report.malformed[0] and "not valid JSON" in report.malformed[2]
    assert report.as_stats() == {"records": 3, "malformed_lines": 3, "fallback_records": 0, "excluded_fallback": 0,
                                 "examples": 3}


def test_synthesize_stage_directory_is_accepted(tmp_path):
    write_traces(tmp_path / "traces.jsonl", short_samples(2))
    assert len(load_sft_examples(tmp_path)) == 2


@pytest.mark.parametrize("case, cause", [
    ("empty", "the file is empty"),
    ("all_fallback", "all 2 record(s) are bare-answer fallbacks"),
    ("malformed", "all 2 line(s) are malformed (first: line 1: not valid JSON"),
    ("no_text", "hold no non-empty trace text"),
])
def test_zero_usable_traces_is_a_stage_input_error(tmp_path, case, cause):
    path = tmp_path / "traces.jsonl"
    samples = short_samples(2)
    if case == "empty":
        path.write_text("\n")
    elif case == "all_fallback":
        write_traces(path, samples, fallback_ids={s.id for s in samples})
    elif case == "malformed":
        path.write_text("not json\n[1, 2]\n")
    else:
        path.write_text("".join(json.dumps(record(s, ["", " "])) + "\n" for s in samples))
    with pytest.raises(StageInputError) as err:
        load_sft_examples(path, include_fallback=case != "all_fallback")
    msg = str(err.value)
    assert str(path) in msg and cause in msg and "openrft synthesize" in msg


def test_missing_traces_file_names_the_producing_stage(tmp_path):
    with pytest.raises(StageInputError, match=r"does not exist.*openrft synthesize"):
        load_sft_examples(tmp_path / "runs" / "x" / "synthesize" / "traces.jsonl")
    with pytest.raises(StageInputError, match="directory without traces.jsonl"):
        load_sft_examples(tmp_path)
