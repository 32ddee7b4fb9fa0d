"""Bad data files are named precisely: bytes that are not UTF-8 (file:line and byte offset), empty files, one file
without splits, questions too long for the model."""

from __future__ import annotations

import json
import logging

import pytest

from openrft.data import DataError, Sample, load_samples
from openrft.data.jsonl import read_records
from openrft.data.lengths import drop_long_questions, max_question_chars
from openrft.data.loaders import has_splits


@pytest.mark.parametrize("name, content, line", [
    ("a.jsonl", b'{"question": "q?", "answer": "4"}\n\n{"question": "caf\xe9", "answer": "4"}\n', 3),
    ("a.json", b'[{"question": "q?", "answer": "4"},\n {"question": "\xff", "answer": "4"}]', 2),
    ("a.csv", b"question,answer\nq?,4\nq\xe9\xe9?,5\n", 3),
])
def test_bytes_that_are_not_utf8_are_named_by_file_line_and_offset(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_bytes(content)
    offset = next(i for i, b in enumerate(content) if b >= 0x80)
    with pytest.raises(DataError) as err:
        load_samples(path)
    assert str(err.value).startswith(f"{path}:{line}: not UTF-8 text (byte offset {offset}: b'\\x")
    assert str(err.value).endswith("; save the file as UTF-8")


def test_record_files_name_undecodable_bytes_too(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": "\x80"}\n')
    with pytest.raises(DataError, match=r"labels.jsonl:2: not UTF-8 text \(byte offset 16: b'\\x80', invalid start"):
        read_records(path, dict, "records", "like {}")


@pytest.mark.parametrize("name, content", [("e.jsonl", "\n\n"), ("e.json", "[]"), ("e.csv", "question,answer\n")])
def test_an_empty_file_is_an_error_not_zero_samples(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=rf"^{path}: no samples \(the file holds no records\)$"):
        load_samples(path)
    assert load_samples(path, limit=0) == []


def test_only_bundled_names_split_folders_and_dataset_dicts_hold_splits(tmp_path):
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"question": "q?", "answer": "4"}) + "\n")
    (tmp_path / "tree" / "train").mkdir(parents=True)
    (tmp_path / "tree" / "train" / "t.jsonl").write_text(one.read_text())
    assert has_splits("arithmetic") and has_splits(tmp_path / "tree")
    assert not has_splits(one) and not has_splits(tmp_path / "tree" / "train")


def test_long_questions_are_skipped_with_their_ids_or_refused(caplog):
    limit = max_question_chars(100)
    samples = [Sample(id="short", task="t", question="2+2?", answer="4"),
               Sample(id="long", task="t", question="x" * (limit + 1), answer="4"),
               Sample(id="options", task="t", question="q?", answer="A", answer_type="mcq", choices=("y" * limit, "z"))]
    with caplog.at_level(logging.WARNING, logger="openrft.data.lengths"):
        assert [s.id for s in drop_long_questions(samples, 100)] == ["short"]
    assert f"long ({limit + 1} characters); options ({limit + 3} characters)" in caplog.text
    with pytest.raises(DataError, match=r"2 question\(s\) too long for a model context of 100 tokens"):
        drop_long_questions(samples, 100, "error")
    assert len(drop_long_questions(samples, None)) == 3  # an unknown context: a generous default bound
