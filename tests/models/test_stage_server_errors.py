"""A stage interrupted by a server error keeps what finished, and its rerun asks the server only for the rest.

eval and synthesize run against the scripted OpenAI-compatible server of ``scripted_http`` (one question's
requests fail with a 400, which the client does not retry); PRM labelling is tested in its own module with a
generator that raises the client's error mid-way.
"""

from __future__ import annotations

import json

import pytest
from scripted_http import client, scripted  # noqa: F401  (scripted is a fixture)

from openrft.data.sample import Sample
from openrft.evaluate.runner import COMPLETIONS, EvalConfig, evaluate
from openrft.models.backends.openai_http import GenerationError
from openrft.synthesize import TRACES, SynthesizeConfig, run_synthesize

SAMPLES = [Sample(id=f"q{i}", task="t", question=f"Add {i} and 2 (question {i}).", answer=str(i + 2),
                  answer_type="numeric") for i in range(4)]
BAD = "(question 2)"
REFUSED = (400, {"error": {"message": "context length exceeded", "type": "invalid_request_error"}})


def _asked(script) -> list[str]:
    """The question of every request the server saw, in order."""
    return [body["messages"][-1]["content"] for _, _, body in script.requests]


def test_eval_keeps_finished_items_and_reruns_only_the_failed_one(scripted, tmp_path):  # noqa: F811
    script, url = scripted(per_request=lambda body: REFUSED if BAD in body["messages"][-1]["content"] else "ok")
    config = EvalConfig(n=2, temperature=1.0, max_new_tokens=8, seed=3)
    with pytest.raises(GenerationError, match="1 of 4 requests failed"):
        evaluate(client(url), SAMPLES, config, tmp_path / "run", show_progress=False)
    saved = [json.loads(line)["id"] for line in (tmp_path / "run" / COMPLETIONS).read_text().splitlines()]
    assert sorted(saved) == ["q0", "q1", "q3"]

    script.per_request = None
    script.requests.clear()
    resumed = evaluate(client(url), SAMPLES, config, tmp_path / "run", show_progress=False)
    assert len(script.requests) == 1 and BAD in _asked(script)[0]
    whole = evaluate(client(url), SAMPLES, config, tmp_path / "whole", show_progress=False)
    assert resumed.records == whole.records
    lines = [json.loads(line)["id"] for line in (tmp_path / "run" / COMPLETIONS).read_text().splitlines()]
    assert lines == ["q0", "q1", "q2", "q3"]  # the finished file is in dataset order, one line per item


def test_synthesize_keeps_finished_requests_and_reruns_only_the_failed_one(scripted, tmp_path):  # noqa: F811
    script, url = scripted(per_request=lambda body: REFUSED if BAD in body["messages"][-1]["content"] else "ok")
    config = SynthesizeConfig(budget=4, rounds=(2,), temperature=1.0, max_new_tokens=8, seed=5,
                              questions_per_batch=4)
    with pytest.raises(GenerationError):
        run_synthesize(SAMPLES, client(url, cache_dir=tmp_path / "cache"), config, tmp_path / "run",
                       show_progress=False)

    script.per_request = None
    script.requests.clear()
    resumed = run_synthesize(SAMPLES, client(url, cache_dir=tmp_path / "cache"), config, tmp_path / "run",
                             show_progress=False)
    rerun = _asked(script)
    script.requests.clear()
    whole = run_synthesize(SAMPLES, client(url), config, tmp_path / "whole", show_progress=False)
    # the failed round's three finished requests come from the cache; the refused one is sent first
    assert len(rerun) == len(script.requests) - 3 and BAD in rerun[0]
    assert resumed.records == whole.records
    assert (tmp_path / "run" / TRACES).read_bytes() == (tmp_path / "whole" / TRACES).read_bytes()
