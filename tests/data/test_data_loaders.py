"""Loaders: bundled data, field-map round trips on tmp files, and every bad-input error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from openrft.data import (
    SCIKNOWEVAL_TASKS,
    DataError,
    FieldMap,
    Sample,
    bundled_path,
    canonical_number,
    load_bundled,
    load_csv,
    load_gsm8k,
    load_hf_from_disk,
    load_json,
    load_jsonl,
    load_parquet,
    load_samples,
    load_sciknoweval,
    load_svamp,
    save_samples,
)

def _write(tmp_path: Path, name: str, lines: list[object]) -> Path:
    p = tmp_path / name
    p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return p


GOOD = {"question": "q?", "answer": "a"}


# ---- bundled data through each loader ------------------------------------------------


@pytest.mark.parametrize("task", SCIKNOWEVAL_TASKS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_sciknoweval_counts_and_fields(task: str, split: str) -> None:
    samples = load_sciknoweval(bundled_path(f"sciknoweval/{task}", split))
    expected = 49 if (task, split) == ("diffusion_rate_analysis", "test") else 100
    assert len(samples) == expected
    assert len({s.id for s in samples}) == expected
    for i, s in enumerate(samples):
        assert s.answer_type == "mcq" and s.task == task and s.id == f"{task}/{split}/{i}"
        assert len(s.choices) == 4 and s.answer in "ABCD"
        assert s.meta["split"] == split and s.meta["domain"] and s.meta["source"]


def test_sciknoweval_first_record_and_ids_stable() -> None:
    s = load_bundled("sciknoweval/chemical_calculation")[0]
    assert s.question.startswith("What is the work involved if a gas in a 2.0-liter container")
    assert s.choices == ("-3.2 L atm", "-4.8 L atm", "+14.4 L atm", "-9.62 L atm") and s.answer == "A"
    assert s.meta["domain"] == "Chemistry" and s.meta["subtask"] == "MMLU" and s.meta["source"] == "MMLU"
    assert [x.id for x in load_bundled("sciknoweval/chemical_calculation")] == \
        [x.id for x in load_samples(bundled_path("sciknoweval/chemical_calculation"))]


def test_sciknoweval_source_defects_are_noted() -> None:
    test = {s.id: s for s in load_bundled("sciknoweval/all", "test")}
    bad = test["perovskite_stability_prediction/test/63"]  # file line 64: 5 texts for 4 labels
    assert len(bad.choices) == 4 and bad.answer == "C" and bad.choices[2] == "Ba6Bi2Zr7Fe1O24"
    assert "5 entries for 4 labels" in bad.meta["defects"][0]
    assert test["high_school_physics_calculation/test/59"].meta["defects"] == ["repeated option texts"]
    assert sum("defects" in s.meta for s in test.values()) == 2


def test_sciknoweval_all_in_paper_order() -> None:
    test, train = load_bundled("sciknoweval/all", "test"), load_bundled("sciknoweval/all", "train")
    assert (len(train), len(test)) == (800, 749)
    assert list(dict.fromkeys(s.task for s in test)) == list(SCIKNOWEVAL_TASKS)


def test_gsm8k() -> None:
    samples = load_gsm8k(bundled_path("gsm8k"))
    assert len(samples) == 1319 and samples[0].id == "gsm8k/test/0"
    s = samples[0]
    assert s.answer == "18" and s.answer_type == "numeric"
    assert s.meta["rationale"] == ("Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
                                   "She makes 9 * 2 = $18 every day at the farmer\u2019s market.")
    answers = {x.answer for x in samples}
    assert "2125" in answers and "1450000" in answers and "-10" in answers  # "2,125", "1,450,000"
    assert not any("<<" in x.meta["rationale"] or "####" in x.meta["rationale"] for x in samples)


def test_svamp() -> None:
    samples = load_svamp(bundled_path("svamp"))
    assert len(samples) == 1000 and len({s.id for s in samples}) == 1000
    s = samples[0]
    assert s.id == "svamp/chal-1" and s.answer == "51" and s.answer_type == "numeric"
    assert s.question == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack"
                          " How much do you have to pay to buy each pack?")
    assert s.meta["equation"] == "( 76.0 - 25.0 )" and s.meta["type"] == "Subtraction"
    assert all("." not in x.answer for x in samples)  # every SVAMP answer is a whole number


def test_canonical_number() -> None:
    assert canonical_number(51.0) == "51" and canonical_number(2.50) == "2.5" and canonical_number(7) == "7"
    assert canonical_number("1,234.50") == "1234.5" and canonical_number("1e3") == "1000"
    for bad in ("12a", "1,23", "$5", "", True):
        with pytest.raises(ValueError):
            canonical_number(bad)


# ---- load_samples dispatch --------------------------------------------------------------


def test_load_samples_bundled_name_directory_and_limit(tmp_path: Path) -> None:
    assert len(load_samples("svamp")) == 1000
    assert len(load_samples("sciknoweval/all", split="train", limit=5)) == 5
    root = bundled_path("sciknoweval/all", "test").parent  # the train/test tree
    test = load_samples(root, split="test")
    assert len(test) == 749 and test[0].task == "GB1_ftness_prediction"  # files in name order
    assert len(load_samples(root, split="train", limit=150)) == 150
    with pytest.raises(DataError, match=r"holds splits \['test', 'train'\]; pass split="):
        load_samples(root)
    with pytest.raises(DataError, match="no split folder 'dev'"):
        load_samples(root, split="dev")
    with pytest.raises(DataError, match="did you mean: gsm8k"):
        load_samples("gsm8")
    with pytest.raises(DataError, match="no such file"):
        load_samples(tmp_path / "nothing.jsonl")


def test_sniffing_by_keys(tmp_path: Path) -> None:
    src = bundled_path("gsm8k").read_text().splitlines()[:3]
    p = tmp_path / "math.jsonl"
    p.write_text("\n".join(src) + "\n")
    got = load_samples(p)
    assert [s.answer_type for s in got] == ["numeric"] * 3 and "rationale" in got[0].meta
    svamp = json.loads(bundled_path("svamp").read_text())[:2]
    (tmp_path / "sv.json").write_text(json.dumps({"data": svamp}))
    assert load_samples(tmp_path / "sv.json")[0].answer == "51"


# ---- field maps and round trips ---------------------------------------------------------

ROWS = [
    {"qid": "r1", "problem": "Pick the prime.", "opts": {"text": ["9", "7", "8"], "label": ["C", "A", "B"]},
     "gold": "A", "subject": "math"},
    {"qid": "r2", "problem": "Pick the even one.", "opts": {"text": ["3", "4"], "label": ["B", "A"]},
     "gold": "A", "subject": "math"},
]
FM = FieldMap(question="problem", answer="gold", choices="opts", id="qid", task="subject")


def _check_rows(samples: list[Sample]) -> None:
    assert [s.id for s in samples] == ["r1", "r2"]
    assert samples[0].choices == ("7", "8", "9") and samples[0].answer == "A"  # sorted by label
    assert samples[1].choices == ("4", "3") and samples[1].gold_index == 0
    assert {s.task for s in samples} == {"math"} and samples[0].answer_type == "mcq"


def test_jsonl_json_field_map(tmp_path: Path) -> None:
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    _check_rows(load_jsonl(tmp_path / "q.jsonl", FM))
    (tmp_path / "q.json").write_text(json.dumps(ROWS, indent=2))
    _check_rows(load_json(tmp_path / "q.json", FM))
    (tmp_path / "d.json").write_text(json.dumps({"data": ROWS}))
    _check_rows(load_samples(tmp_path / "d.json", field_map=FM))


def test_csv_separate_columns_and_json_cells(tmp_path: Path) -> None:
    p = tmp_path / "q.csv"
    with p.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "A", "B", "C", "D", "answer", "kind"])
        w.writerow(["2+2?", "3", "4", "5", "", "B", "x"])  # 3 options; empty D cell is no option
        w.writerow(["Capital of France?", "Rome", "Paris", "Oslo", "Bern", "Paris", "y"])  # gold by text
    got = load_csv(p, FieldMap(choices=("A", "B", "C", "D")), task="quiz")
    assert [s.choices for s in got] == [("3", "4", "5"), ("Rome", "Paris", "Oslo", "Bern")]
    assert [s.answer for s in got] == ["B", "B"] and [s.id for s in got] == ["q/0", "q/1"]
    assert got[0].task == "quiz" and got[0].meta == {"kind": "x"}
    p2 = tmp_path / "n.csv"
    p2.write_text('question,choices,answer,answer_type\n"x?","[""a"", ""b""]",b,mcq\n"1+1?",,2.0,numeric\n')
    a, b = load_samples(p2)
    assert a.choices == ("a", "b") and a.answer == "B" and (b.answer, b.answer_type) == ("2", "numeric")


def test_dotted_paths_digit_labels_int_gold_tsv_and_folders(tmp_path: Path) -> None:
    arc = {"q": {"stem": "Which melts?"}, "choices": {"text": ["ice", "rock", "sand"], "label": ["2", "1", "3"]},
           "answerKey": "2", "n": 1}
    (s,) = load_jsonl(_write(tmp_path, "arc.jsonl", [arc]), FieldMap(question="q.stem", answer="answerKey"))
    assert s.choices == ("rock", "ice", "sand") and s.answer == "B" and s.meta == {"n": 1}
    mmlu = {"question": "2*3?", "choices": ["5", "6", "7"], "answer": 1}
    assert load_jsonl(_write(tmp_path, "mmlu.jsonl", [mmlu]))[0].answer == "B"  # int gold = 0-based index
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "b.tsv").write_text("question\tanswer\nx?\t1\n")
    _write(folder, "a.jsonl", [GOOD])
    got = load_samples(folder, answer_type="text")
    assert [(x.id, x.task) for x in got] == [("a/0", "a"), ("b/0", "b")]


def test_samples_layout_round_trip(tmp_path: Path) -> None:
    orig = load_bundled("sciknoweval/retrosynthesis")[:5] + load_bundled("gsm8k")[:5]
    path = save_samples(orig, tmp_path / "out" / "s.jsonl")
    back = load_samples(path)
    assert back == orig and [s.meta for s in back] == [s.meta for s in orig]
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temp file left behind


def test_parquet_round_trip(tmp_path: Path) -> None:
    import pyarrow as pa  # a dependency of datasets, which openrft requires
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "q.parquet")
    _check_rows(load_parquet(tmp_path / "q.parquet", FM))
    orig = load_bundled("svamp")[:4]
    pq.write_table(pa.Table.from_pylist([s.to_dict() for s in orig]), tmp_path / "s.parquet")
    assert load_samples(tmp_path / "s.parquet") == orig


def test_hf_from_disk(tmp_path: Path) -> None:
    import datasets
    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "one"))
    _check_rows(load_hf_from_disk(tmp_path / "one", field_map=FM))
    _check_rows(load_samples(tmp_path / "one", field_map=FM))
    dd = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dict"))
    assert len(load_samples(tmp_path / "dict", split="test", field_map=FM)) == 1
    with pytest.raises(DataError, match=r"DatasetDict needs a split name; pass split= one of \['test', 'train'\]"):
        load_samples(tmp_path / "dict", field_map=FM)
    ski = [json.loads(x) for x in bundled_path("sciknoweval/material_calculation").read_text().splitlines()[:3]]
    datasets.Dataset.from_list(ski).save_to_disk(str(tmp_path / "ski"))
    assert [s.answer_type for s in load_samples(tmp_path / "ski")] == ["mcq"] * 3  # layout sniffed per row


# ---- errors: file:line and field ----------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "field", "message"),
    [
        ({"answer": "a"}, "question", "question is missing or empty"),
        ({"question": "  ", "answer": "a"}, "question", "question is missing or empty"),
        ({"question": "q?"}, "answer", "answer is missing or empty"),
        ({"question": "q?", "answer": "E", "choices": ["x", "y"]}, "answer",
         r"gold answer 'E' is not among the choices \(A, B\)"),
        ({"question": "q?", "answer": "A", "choices": []}, "choices", "choices are empty"),
        ({"question": "q?", "answer": "A", "answer_type": "mcq"}, "choices",
         "multiple-choice record with missing or empty choices"),
        ({"question": "q?", "answer": "a", "answer_type": "bool"}, "answer_type", "unknown answer type 'bool'"),
        ({"question": "q?", "answer": "ten", "answer_type": "numeric"}, "answer", "'ten' is not a number"),
        ({"question": "q?", "answer": "A", "choices": ["x", None]}, "choices", "choice 1 is empty"),
        ({"question": "q?", "answer": "A", "choices": {"text": ["x"], "label": ["A", "B"]}}, "choices",
         'choices dict needs "text" and "label" lists of equal length'),
        ({"question": "q?", "answer": "A", "choices": 5}, "choices", "choices must be a list"),
    ],
)
def test_generic_errors_name_line_and_field(tmp_path: Path, record: dict, field: str, message: str) -> None:
    p = _write(tmp_path, "bad.jsonl", [GOOD, "", record])
    with pytest.raises(DataError, match=rf"bad\.jsonl:3: field '{field}': {message}"):
        load_samples(p)


def test_malformed_json_and_non_objects(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON \(Expecting .* at column \d+\)"):
        load_jsonl(_write(tmp_path, "bad.jsonl", [GOOD, '{"question": "q?", "answer": }']))
    with pytest.raises(DataError, match=r"arr\.jsonl:1: expected a JSON object"):
        load_jsonl(_write(tmp_path, "arr.jsonl", ["[1, 2]"]))
    p = tmp_path / "list.json"
    p.write_text('[\n  {"question": "q?", "answer": "a"},\n  {"question": "q?",\n   "answer": ""}\n]')
    with pytest.raises(DataError, match=r"list\.json:3: field 'answer'"):
        load_json(p)
    p.write_text('[\n  {"question": "q?", "answer": "a"},\n  {"question": "q?" "answer": "b"}\n]')
    with pytest.raises(DataError, match=r"list\.json:3: malformed JSON"):
        load_json(p)
    p.write_text('{"rows": []}')
    with pytest.raises(DataError, match=r"field 'data': expected a list"):
        load_json(p)


def test_dataset_specific_errors(tmp_path: Path) -> None:
    ski = {"question": "q?", "choices": {"text": ["a", "b", "c", "d"], "label": list("ABCD")}, "answerKey": "E"}
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'answerKey': gold answer 'E' is not among the choices"):
        load_sciknoweval(_write(tmp_path, "t.jsonl", [ski]))
    empty = {**ski, "answerKey": "A", "choices": {"text": [], "label": []}}
    with pytest.raises(DataError, match=r"t2\.jsonl:1: field 'choices': choices are empty"):
        load_samples(_write(tmp_path, "t2.jsonl", [empty]))
    with pytest.raises(DataError, match=r"g\.jsonl:2: field 'answer': GSM8K answer needs a final line"):
        load_gsm8k(_write(tmp_path, "g.jsonl", [{"question": "q", "answer": "x\n#### 3"},
                                               {"question": "q", "answer": "no final line"}]))
    with pytest.raises(DataError, match=r"g2\.jsonl:1: field 'answer': final '####' line: '3 apples'"):
        load_gsm8k(_write(tmp_path, "g2.jsonl", [{"question": "q", "answer": "x\n#### 3 apples"}]))
    sv = tmp_path / "sv.json"
    sv.write_text('[\n {"Body": "b", "Question": "q", "Answer": 1.0},\n {"Body": "", "Question": "q", "Answer": 2}\n]')
    with pytest.raises(DataError, match=r"sv\.json:3: field 'Body': Body is missing"):
        load_svamp(sv)
    sv.write_text('[{"Body": "b", "Question": "q", "Answer": "many"}]')
    with pytest.raises(DataError, match=r"sv\.json:1: field 'Answer': 'many' is not a number"):
        load_svamp(sv)


def test_csv_and_parquet_locations(tmp_path: Path) -> None:
    p = tmp_path / "q.csv"
    p.write_text('question,answer\n"multi\nline?",a\nq2?,\n')
    with pytest.raises(DataError, match=r"q\.csv:4: field 'answer': answer is missing"):
        load_csv(p)
    p.write_text("question,answer\nq?,a,extra\n")
    with pytest.raises(DataError, match=r"q\.csv:2: more cells than header columns"):
        load_csv(p)
    import pyarrow as pa  # a dependency of datasets, which openrft requires
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([GOOD, {"question": None, "answer": "b"}]), tmp_path / "q.parquet")
    with pytest.raises(DataError, match=r"q\.parquet: row 1: field 'question'"):
        load_parquet(tmp_path / "q.parquet")


def test_duplicate_ids_formats_and_sample_layout_errors(tmp_path: Path) -> None:
    p = _write(tmp_path, "d.jsonl", [{**GOOD, "id": "x"}, {**GOOD, "id": "y"}, {**GOOD, "id": "x"}])
    with pytest.raises(DataError, match=r"d\.jsonl:3: field 'id': duplicate id 'x' \(first at .*d\.jsonl:1\)"):
        load_samples(p)
    with pytest.raises(DataError, match="unknown format 'xml'; valid: jsonl"):
        load_samples(p, format="xml")
    (tmp_path / "q.txt").write_text("x")
    with pytest.raises(DataError, match="cannot tell the format from the extension '.txt'"):
        load_samples(tmp_path / "q.txt")
    with pytest.raises(DataError, match="answer_type='bool' is unknown"):
        load_samples(p, answer_type="bool")
    bad = {"id": "1", "task": "t", "question": "q", "answer": "Z", "answer_type": "mcq", "choices": ["a"]}
    with pytest.raises(DataError, match=r"s\.jsonl:1: sample '1': gold answer 'Z' is not among"):
        load_samples(_write(tmp_path, "s.jsonl", [bad]), format="samples")
    with pytest.raises(DataError, match=r"s2\.jsonl:1: unknown Sample fields \['extra'\]"):
        load_samples(_write(tmp_path, "s2.jsonl", [{**bad, "answer": "A", "extra": 1}]), format="samples")
