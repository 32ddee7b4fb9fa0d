"""The HTTP backend's limits are flags and recipe keys, and a server that hangs, is down or answers garbage ends a
command in one line naming the URL, the last error and the real flags (exit code 1), not a traceback.

Every command runs against the scripted server of ``tests/scripted_http.py`` (or a port nobody listens on).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from scripted_http import scripted  # noqa: F401  (a fixture)

from openrft.cli.main import main
from openrft.core.rundir import Manifest
from openrft.models.backends.base import HTTPLimits

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _data(tmp_path, n: int = 6) -> str:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n"
                            for i in range(n)))
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(name: str, url: str, tmp_path, *limits: str) -> list[str]:
    """``name`` against ``url`` with a greedy one-sample setting and ``limits`` flags."""
    data, out = _data(tmp_path), str(tmp_path / name)
    common = ["--backend", "openai", "--base-url", url, "--model", "m", "--max-new-tokens", "8", "--quiet",
              "--out", out, *limits]
    if name == "eval":
        return ["eval", "--data", data, "--n", "1", "--temperature", "0", *common]
    if name == "synthesize":
        return ["synthesize", "--data", data, "--budget", "1", "--rounds", "1", "--temperature", "0", *common]
    return ["augment", "--data", data, "--k", "1", "--temperature", "0", *common]


def _last_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_concurrency_flag_bounds_the_requests_in_flight(scripted, tmp_path, capsys):  # noqa: F811
    script, url = scripted(per_request=lambda body: ("sleep", 0.3))
    assert main(_command("eval", url, tmp_path, "--concurrency", "2", "--timeout", "10")) == 0, capsys.readouterr().err
    assert len(script.requests) == 6 and script.most_in_flight == 2


def test_a_hanging_server_fails_after_the_timeout_flag_naming_the_real_flags(scripted, tmp_path, capsys):  # noqa: F811
    script, url = scripted(per_request=lambda body: ("sleep", 5))
    start = time.monotonic()
    rc = main(_command("eval", url, tmp_path, "--timeout", "0.3", "--max-retries", "1", "--concurrency", "1"))
    line = _last_line(capsys)
    assert rc == 1 and time.monotonic() - start < 8
    assert line.startswith(f"openrft eval: POST {url}/chat/completions failed after 2 attempts (no response): "
                           "timed out after 0.3s")
    assert "--timeout (now 0.3 s)" in line and "--max-retries (now 1)" in line and "timeout_s" not in line
    assert "rerun the same command to resume" in line


@pytest.mark.parametrize("command", ["eval", "synthesize", "augment"])
def test_a_server_that_is_down_ends_in_one_line(tmp_path, capsys, command):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    assert main(_command(command, url, tmp_path, "--max-retries", "1")) == 1
    line = _last_line(capsys)
    assert line.startswith(f"openrft {command}: POST {url}/chat/completions failed after 2 attempts (no response): "
                           "ConnectError")
    assert "--max-retries (now 1)" in line


@pytest.mark.parametrize("command", ["eval", "synthesize"])
def test_garbage_replies_end_in_one_line(scripted, tmp_path, capsys, command):  # noqa: F811
    script, url = scripted(per_request=lambda body: "garbage")
    assert main(_command(command, url, tmp_path, "--max-retries", "1", "--concurrency", "1")) == 1
    line = _last_line(capsys)
    assert line.startswith(f"openrft {command}: POST {url}/chat/completions failed after 2 attempts (status 200): "
                           "malformed response body")
    assert "<html>not json{" in line


def test_a_long_server_message_is_shortened_to_one_line(scripted, tmp_path, capsys):  # noqa: F811
    page = b"<html>\n" + b"upstream exploded\n" * 200 + b"</html>"
    script, url = scripted(per_request=lambda body: (502, page))
    assert main(_command("eval", url, tmp_path, "--max-retries", "0")) == 1
    line = _last_line(capsys)
    assert "status 502" in line and "[...]" in line and len(line) < 1200 and "--timeout" in line


def test_bad_limits_are_refused_before_any_request(tmp_path, capsys):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    assert main(_command("synthesize", url, tmp_path, "--concurrency", "0")) == 2
    assert "concurrency >= 1" in _last_line(capsys)
    assert main(_command("eval", url, tmp_path, "--timeout", "0")) == 2
    assert "timeout > 0" in _last_line(capsys)


def test_recipe_stage_keys_set_the_limits_and_leave_identities_alone(tmp_path):
    from openrft.augment.stage import AugmentConfig, run_augment
    from openrft.data.loaders import load_sources
    from openrft.pipeline.recipe import load_recipe, stage_fields
    from openrft.synthesize.stage import SynthesizeConfig, build_generator

    assert {"timeout", "concurrency", "max_retries"} <= set(stage_fields("synthesize")) & set(stage_fields("augment"))
    recipe = load_recipe(RECIPES / "small" / "sft.yaml", ["synthesize.backend=openai", "synthesize.base_url=http://h:1/v1",
                                                    "synthesize.model=m", "synthesize.timeout=2.5",
                                                    "synthesize.concurrency=3", "synthesize.max_retries=0"])
    config = recipe.stage_config("synthesize")
    generator = build_generator(config)
    assert (generator.timeout_s, generator.max_retries, generator.concurrency) == (2.5, 0, 3)
    assert HTTPLimits.of(config) == HTTPLimits(timeout=2.5, concurrency=3, max_retries=0)
    # a stage's identity is what it produces, not how it fetches: the keys it always had, whatever the limits
    assert config.fingerprint_fields() == SynthesizeConfig(**{
        k: getattr(config, k) for k in ("budget", "rounds", "m", "fallback", "accept_truncated", "temperature",
                                        "top_p", "max_new_tokens", "seed", "questions_per_batch", "backend", "model",
                                        "teacher", "source")}).fingerprint_fields()
    assert set(config.fingerprint_fields()) == {
        "budget", "rounds", "m", "fallback", "accept_truncated", "temperature", "top_p", "max_new_tokens", "seed",
        "questions_per_batch", "backend", "model", "teacher", "base_url", "batch_size", "source"}
    samples = load_sources(["arithmetic"], split="train", limit_per_task=3)
    run_augment(samples, None, AugmentConfig(backend="template", k=1, expansion=2, timeout=1.0), tmp_path / "aug")
    first = Manifest.load(tmp_path / "aug")
    run_augment(samples, None, AugmentConfig(backend="template", k=1, expansion=2, timeout=99.0, max_retries=0,
                                             concurrency=1), tmp_path / "aug")
    again = Manifest.load(tmp_path / "aug")
    assert again.fingerprint == first.fingerprint and again.finished == first.finished  # skipped, not redone
    assert not {"timeout", "concurrency", "max_retries"} & set(first.config)
