"""``openrft run``: bad values, missing or empty data, long questions and model typos fail before a model loads,
``--dry-run`` included, with one clear line and exit code 2."""

from __future__ import annotations

import json
import logging

import pytest
import yaml

from openrft.cli.main import main


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """Any model load fails the test: every error here must come first."""
    from openrft.models import loading

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(loading, "_cached_bundled", refuse)


def _recipe(tmp_path, **over) -> str:
    recipe = {"name": "vanilla", "method": "Vanilla", "data": "arithmetic", "test_size": 2,
              "stages": {"eval": {"n": 1, "max_new_tokens": 8}}} | over
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


def _data(tmp_path, questions: list[str]) -> str:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": "4"}) + "\n"
                            for i, q in enumerate(questions)))
    return str(path)


def _run(tmp_path, capsys, recipe: str, *argv: str) -> tuple[int, str]:
    code = main(["run", recipe, "--runs-dir", str(tmp_path / "runs"), "--quiet", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.mark.parametrize("argv, message", [
    (["--set", "eval.n=three"], "stages.eval.n: expected an integer, got 'three'"),
    (["--set", "eval.temperature=hot"], "stages.eval.temperature: expected a number, got 'hot'"),
    (["--set", "eval.max_new_tokens=-3"], "stages.eval: max_new_tokens must be >= 1, got -3"),
    (["--set", "data=no/such/file.jsonl"], "no/such/file.jsonl: no such file or directory"),
    (["--set", "model=smollm2-135"], "'smollm2-135' is neither a bundled model nor a local path"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_bad_input_fails_before_a_model_loads(tmp_path, capsys, argv, message, dry_run):
    code, err = _run(tmp_path, capsys, _recipe(tmp_path), *argv, *(["--dry-run"] if dry_run else []))
    assert code == 2 and message in err
    assert err.count("\n") <= 2  # the plan line (once the recipe is valid) and the error


def test_a_model_typo_offline_names_the_close_bundled_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = _run(tmp_path, capsys, _recipe(tmp_path, model="smollm2-135"), "--dry-run")
    assert code == 2 and "did you mean smollm2-135m" in err and "offline" in err


def test_an_empty_data_file_is_refused_before_a_model_loads(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for argv in (["--dry-run"], []):
        code, err = _run(tmp_path, capsys, _recipe(tmp_path, data=str(empty)), *argv)
        assert code == 2 and f"{empty}: no samples (the file holds no records)" in err


def test_a_question_too_long_for_the_model_is_skipped_or_refused(tmp_path, capsys, caplog):
    data = _data(tmp_path, ["What is 2+2?", "x " * 200_000, "What is 1+3?"])  # 400k characters > 32 x 8192
    with caplog.at_level(logging.WARNING, logger="openrft.data.lengths"):
        code, _ = _run(tmp_path, capsys, _recipe(tmp_path, data=data), "--dry-run")
    assert code == 0 and "skipping 1 question(s) too long" in caplog.text and "q1 (400000 characters)" in caplog.text
    code, err = _run(tmp_path, capsys, _recipe(tmp_path, data=data, long_questions="error"), "--dry-run")
    assert code == 2 and "1 question(s) too long" in err and "q1 (400000 characters)" in err


def test_a_metric_destination_that_is_not_installed_fails_before_any_stage(tmp_path, capsys, monkeypatch):
    from openrft.core import tracking

    monkeypatch.setitem(tracking.REPORT_TO, "wandb", "openrft_tests_no_such_module")
    recipe = _recipe(tmp_path, stages={"rl": {"steps": 1, "report_to": "wandb"}, "eval": {"n": 1}})
    for argv in (["--dry-run"], []):
        code, err = _run(tmp_path, capsys, recipe, *argv)
        assert code == 2 and "report_to wandb needs openrft_tests_no_such_module: pip install 'openrft[wandb]'" in err
    assert not list((tmp_path / "runs").rglob("manifest.json"))  # no stage started


def test_a_critic_model_typo_fails_before_a_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stages = {"rl": {"estimator": "gae", "critic": "smollm2-135", "steps": 1}, "eval": {"n": 1, "max_new_tokens": 8}}
    code, err = _run(tmp_path, capsys, _recipe(tmp_path, stages=stages), "--dry-run")
    assert code == 2 and "did you mean smollm2-135m" in err
    stages["rl"]["critic"] = "shared"
    code, err = _run(tmp_path, capsys, _recipe(tmp_path, stages=stages), "--dry-run")
    assert code == 0, err
