"""Stage commands refuse bad flags, bad data and unknown models with one clear line (exit code 2) before a model
loads; ``openrft data check`` names undecodable bytes and empty files, and a single file leaks nothing."""

from __future__ import annotations

import json
import logging
import time

import pytest

from openrft.cli.main import main
from openrft.models.backends.base import Completion, Generator


@pytest.fixture()
def no_model_loads(monkeypatch):
    from openrft.models import backends, loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(backends, "make_generator", refuse)
    monkeypatch.setattr(loading, "load_model", refuse)


def _data(tmp_path, questions: list[str], name: str = "items.jsonl") -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": "4"}) + "\n"
                            for i, q in enumerate(questions)))
    return str(path)


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, message", [
    (["eval", "--max-new-tokens", "-3"], "max_new_tokens must be >= 1, got -3"),
    (["eval", "--temperature", "-1"], "temperature must be >= 0, got -1.0"),
    (["eval", "--top-p", "2"], "top_p must be in (0, 1], got 2.0"),
    (["synthesize", "--data", "arithmetic", "--max-new-tokens", "-3"], "max_new_tokens must be >= 1, got -3"),
    (["augment", "--data", "arithmetic", "--out", "x", "--top-p", "0"], "top_p must be in (0, 1], got 0.0"),
    (["rl", "--out", "x", "--data", "arithmetic", "--temperature", "-2"], "temperature must be >= 0, got -2.0"),
])
def test_out_of_range_flags_fail_before_a_model_loads(tmp_path, capsys, no_model_loads, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in _err(capsys)


def test_flags_of_the_wrong_type_are_refused_by_the_parser(capsys, no_model_loads):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--n", "three"])
    assert exit_.value.code == 2 and "argument --n: invalid int value: 'three'" in _err(capsys)


def test_a_config_file_value_of_the_wrong_type_is_named(tmp_path, capsys, no_model_loads):
    config = tmp_path / "sft.yaml"
    config.write_text("epochs: two\n")
    assert main(["sft", "--traces", "t.jsonl", "--out", str(tmp_path / "o"), "--config", str(config)]) == 2
    assert "--epochs: expected a number, got 'two'" in _err(capsys)


def test_eval_names_the_file_line_and_byte_that_is_not_utf8(tmp_path, capsys, no_model_loads):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"question": "2+2?", "answer": "4"}\n{"question": "caf\xe9?", "answer": "4"}\n')
    assert main(["eval", "--data", str(path)]) == 2
    assert f"{path}:2: not UTF-8 text (byte offset 53: b'\\xe9', invalid continuation byte)" in _err(capsys)


def test_eval_on_an_empty_file_fails_before_a_model_loads(tmp_path, capsys, no_model_loads):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert main(["eval", "--data", str(path)]) == 2
    assert f"{path}: no samples (the file holds no records)" in _err(capsys)


def test_a_model_typo_offline_is_named_at_once_with_close_matches(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    assert main(["eval", "--model", "smollm2-135", "--data", "arithmetic", "--limit", "1"]) == 2
    assert time.perf_counter() - t0 < 10
    err = _err(capsys)
    assert "'smollm2-135' is neither a bundled model nor a local path" in err and "did you mean smollm2-135m" in err


class Answers(Generator):
    """Answers '4' to every prompt; refuses prompts over ``limit`` characters as a model's context would."""

    def __init__(self, limit: int):
        self.limit, self.seen = limit, []

    def too_long(self, prompts):
        return {i: "too many tokens" for i, p in enumerate(prompts) if len(p[-1]["content"]) > self.limit}

    def generate(self, prompts, params, progress=None):
        self.seen += [p[-1]["content"] for p in prompts]
        return [[Completion("The answer is 4", 4)] * params.n for _ in prompts]


def test_eval_skips_questions_too_long_for_the_model_and_names_them(tmp_path, caplog, capsys, monkeypatch):
    from openrft.models import backends

    generator = Answers(limit=500)
    monkeypatch.setattr(backends, "make_generator", lambda *a, **k: generator)
    data = _data(tmp_path, ["What is 2+2?", "x " * 200_000, "What is 1+3? " + "y" * 600, "What is 3+1?"])
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert main(["eval", "--data", data, "--greedy", "--max-new-tokens", "4", "--out", str(out), "--quiet"]) == 0
    assert "q1 (400000 characters)" in caplog.text  # by its length in characters, before the model loads
    assert "q2 (too many tokens)" in caplog.text  # by its prompt, before anything is generated
    done = [json.loads(line)["id"] for line in (out / "completions.jsonl").read_text().splitlines()]
    assert done == ["q0", "q3"] and len(generator.seen) == 2


def test_eval_refuses_long_questions_under_the_flag_before_a_model_loads(tmp_path, capsys, no_model_loads):
    data = _data(tmp_path, ["What is 2+2?", "x " * 200_000])
    assert main(["eval", "--data", data, "--long-questions", "error"]) == 2
    assert "1 question(s) too long for a model context of 8192 tokens" in (err := _err(capsys))
    assert "q1 (400000 characters)" in err


def test_data_check_of_one_file_reports_no_false_leak(tmp_path, capsys):
    data = _data(tmp_path, ["What is 2+2?", "What is 3+3?", "What is 2+2?"])
    assert main(["data", "check", data, "--json"]) == 0
    captured = capsys.readouterr()
    counts = json.loads(captured.out)["counts"]
    assert counts["leaked_test"] == 0 and counts["test_repeats"] == 1 and counts["n_train"] == 0
    assert "holds one set of samples, not train/test splits" in captured.err


@pytest.mark.parametrize("content, message", [
    (b"", ": no samples (the file holds no records)"),
    (b'{"question": "\xff", "answer": "4"}\n', ":1: not UTF-8 text (byte offset 14: b'\\xff', invalid start byte)"),
])
def test_data_check_names_empty_and_undecodable_files(tmp_path, capsys, content, message):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    assert main(["data", "check", str(path)]) == 2
    assert f"openrft data: {path}{message}" in _err(capsys)
