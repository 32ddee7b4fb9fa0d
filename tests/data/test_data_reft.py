"""The bundled ReFT release (``reft/*``) and GSM8K train: counts, fields, MathQA's inline options, gold programs."""

from __future__ import annotations

import dataclasses
import json

import pytest

from openrft.data import DataError, get_bundled, leakage_report, load_bundled, load_samples
from openrft.data.bundled import bundled_root
from openrft.data.records import split_inline_options
from openrft.tasks import MCQTask, NumericTask, ProgramTask

REFT = bundled_root() / "reft"
#: gold programs of svamp_python_sdp.json that miss the gold at the default tolerance: every one is a rounded gold
#: (e.g. 3.333 for 10 / 3, 9 for 8.0 / 0.6667 * 0.75), reached within 0.01
ROUNDED_GOLDS = {f"svamp-pcot/svamp_{i}" for i in (640, 993, 1297, 1418, 1851, 1899, 1924, 1940, 2493)}


@pytest.mark.parametrize(("file", "count"), [
    ("svamp_nl.json", 3076), ("svamp_python_sdp.json", 3043), ("svamp_test_set.json", 1000),
    ("mathqa_test_set.json", 1605), ("mathqa-numeric_test_set.json", 1605)])
def test_files_are_the_release(file: str, count: int) -> None:
    assert len(json.loads((REFT / file).read_text(encoding="utf-8"))) == count
    assert (REFT / "NOTICE").read_text(encoding="utf-8").strip() == "Copyright 2023 Bytedance Ltd."
    assert "Apache License" in (REFT / "LICENSE").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["gsm8k", "reft/svamp", "reft/svamp-pcot", "reft/mathqa", "reft/mathqa-numeric"])
def test_every_record_loads_with_the_listed_count(name: str) -> None:
    ds = get_bundled(name)
    for split, count in ds.records.items():
        samples = load_bundled(name, split)
        assert len(samples) == count and len({s.id for s in samples}) == count
        assert {s.answer_type for s in samples} == {ds.answer_type or "numeric"}
    assert get_bundled("gsm8k").records == {"train": 7473, "test": 1319}


def test_gsm8k_train_is_bundled_and_apart_from_test() -> None:
    train, test = load_bundled("gsm8k", "train"), load_bundled("gsm8k", "test")
    assert train[0].id == "gsm8k/train/0" and train[0].answer == "72" and train[0].meta["rationale"]
    assert "<<" not in train[0].meta["rationale"]
    assert leakage_report(train, test, threshold=None, normalize=False).n_leaked == 0


def test_svamp_fields() -> None:
    nl = {s.id: s for s in load_bundled("reft/svamp", "train")}
    s = nl["svamp/svamp_1"]
    assert (s.task, s.answer, s.answer_type, s.meta["item_id"]) == ("svamp", "208", "numeric", "svamp_1")
    assert s.meta["rationale"].endswith("Therefore, Iesha has 208 books about sports.")  # "the answer is <208>" cut
    assert NumericTask().render_answer(s).endswith("sports.\nThe answer is \\boxed{208}.")
    assert "rationale" not in nl["svamp/svamp_852"].meta  # "This question was already answered earlier."
    defects = [d for x in nl.values() for d in x.meta.get("defects", [])]
    assert sum("refers to another question" in d for d in defects) == 9
    assert sum("concludes" in d for d in defects) == 9 and "answer_cot concludes <3.22>" in nl["svamp/svamp_647"].meta[
        "defects"][0]
    pcot = load_bundled("reft/svamp-pcot", "train")[1]
    assert (pcot.id, pcot.answer_type, pcot.answer) == ("svamp-pcot/svamp_1", "program", "208")
    assert pcot.meta["program"].startswith("def solution():\n") and ProgramTask().has_reference_solution(pcot)
    test = load_bundled("reft/svamp-pcot", "test")[0]
    assert (test.id, test.answer, test.answer_type) == ("svamp-pcot/svamp_3735", "14", "program")
    assert load_bundled("reft/svamp", "test")[0].answer_type == "numeric"
    assert load_bundled("reft/svamp", "test", limit=1, answer_type="program")[0].answer_type == "program"


def test_mathqa_inline_options_become_choices() -> None:
    mq = {s.meta["item_id"]: s for s in load_bundled("reft/mathqa")}
    s = mq["mathqa_0"]
    assert s.question.endswith("if no discount had been offered ?") and "\n" not in s.question
    assert s.choices == ("38", "27.675", "30", "data inadequate", "none of these") and s.answer == "A"
    raw = json.loads((REFT / "mathqa_test_set.json").read_text(encoding="utf-8"))
    assert [mq[r["item_id"]].answer for r in raw] == [r["answer_value"].upper() for r in raw]  # a-e -> A-E
    assert mq["mathqa_2"].choices[2] == "870" and mq["mathqa_2"].answer == "C"
    assert mq["mathqa_95"].choices == ("12", "15", "10", "8", "14")  # options written as a Python list
    assert mq["mathqa_628"].choices[0] == "4 inches" and "repeat their label" in mq["mathqa_628"].meta["defects"][0]
    assert all(len(x.choices or ()) == 5 for x in mq.values())
    task = MCQTask()
    assert task.render_question(s).endswith("\n\nA. 38\nB. 27.675\nC. 30\nD. data inadequate\nE. none of these")
    assert task.grade("So the answer is \\boxed{A}.", s).correct and not task.grade("\\boxed{b}", s).correct
    num = load_bundled("reft/mathqa-numeric")[0]
    assert (num.id, num.answer, num.answer_type) == ("mathqa-numeric/mathqa-numeric_0", "38", "numeric")


def test_split_inline_options() -> None:
    assert split_inline_options("q ?\na ) 1 , 2 , b ) f ( x , y ) , c ) 3") == ("q ?", ["1 , 2", "f ( x , y )", "3"])
    assert split_inline_options("q ?\n['a ) 1 cm', 'b ) 2 cm']") == ("q ?", ["1 cm", "2 cm"])
    assert split_inline_options("q ?\nb ) 1 , a ) 2") is None  # letters out of order
    assert split_inline_options("a ) 1 , b ) 2") is None  # no stem
    assert split_inline_options("q ?\n['a ) 1'") is None


def test_reft_files_load_by_path_and_bad_records_fail(tmp_path) -> None:
    s = load_samples(REFT / "svamp_python_sdp.json", limit=1)[0]
    assert (s.task, s.answer_type) == ("svamp", "program")  # layout sniffed, task from item_id
    assert load_samples(REFT / "mathqa_test_set.json", limit=1)[0].answer_type == "mcq"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"item_id": "x_1", "question": "no options", "answer_value": "a"}]))
    with pytest.raises(DataError, match=r"bad.json:1: field 'answer_value': 'a' is not a number"):
        load_samples(bad)
    with pytest.raises(DataError, match="field 'question': multiple choice needs options"):
        load_samples(bad, answer_type="mcq")


def test_gold_programs_reach_the_gold_answer() -> None:
    """Graded as ReFT grades (within 0.01, the samples' meta["grading"]), every sampled gold program reaches its
    gold, the rounded ones too; at the default tolerance alone the rounded ones miss."""
    samples = load_bundled("reft/svamp-pcot", "train")
    picked = samples[::61][:50] + [s for s in samples if s.id in ROUNDED_GOLDS]
    assert all(s.meta["grading"] == {"abs_tol": 0.01} for s in picked)
    task = ProgramTask(max_workers=2)
    grades = task.grade_batch([task.render_answer(s) for s in picked], picked)
    assert all(g.correct for g in grades), [s.id for s, g in zip(picked, grades) if not g.correct]
    strict = [dataclasses.replace(s, meta={k: v for k, v in s.meta.items() if k != "grading"})
              for s in picked if s.id in ROUNDED_GOLDS]
    assert not any(g.correct for g in task.grade_batch([task.render_answer(s) for s in strict], strict))


def test_data_list_shows_counts_and_licences(capsys) -> None:
    from openrft.cli.data import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("gsm8k "))
    assert "train 7,473, test 1,319" in line
    for name in ("reft/svamp ", "reft/svamp-pcot ", "reft/mathqa ", "reft/mathqa-numeric "):
        assert name in out
    assert "train 3,043, test 1,000" in out and "test 1,605" in out
    assert "Apache-2.0 (ReFT release, Copyright 2023 Bytedance Ltd." in out and "MathQA, Apache-2.0" in out
    assert "SVAMP, MIT" in out
