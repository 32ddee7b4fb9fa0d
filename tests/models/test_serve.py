"""``openrft serve``: the tiny real model behind the OpenAI API, read back through ``OpenAIGenerator``."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from openrft.models.backends.base import Generator, SamplingParams
from openrft.models.backends.hf import render_prompt
from openrft.models.backends.openai_http import GenerationError, OpenAIGenerator
from openrft.serve import Limits, build_parser, main, make_server, server_from_args
from openrft.serve.command import limits_from_args

GREEDY = SamplingParams(max_new_tokens=10)
CHATS = [
    [{"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a colour."}],
    [{"role": "user", "content": "Count to five, please."}],
]
RAW = ["The capital of France is", "1, 2, 3,"]


@pytest.fixture(scope="module")
def server(tiny_generator):
    with make_server(tiny_generator, "tiny") as srv:
        yield srv


@pytest.fixture
def gen(server):
    with OpenAIGenerator(server.url + "/v1", "tiny", concurrency=4, timeout_s=30, max_retries=2,
                         backoff_s=0.01) as g:
        yield g


def post(server, path, body, **kw):
    # allow_nan: NaN and Infinity go out as the bare literals some clients send
    return httpx.post(server.url + path, content=json.dumps(body, allow_nan=True), timeout=30, **kw)


def test_greedy_through_http_equals_direct(gen, tiny_generator):
    prompts = CHATS + RAW
    assert gen.generate(prompts, GREEDY) == tiny_generator.generate(prompts, GREEDY)


def test_seeded_sampling_with_n_equals_direct(gen, tiny_generator):
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, seed=7, max_new_tokens=8)
    for prompt in (CHATS[0], RAW[0]):
        out = gen.generate([prompt], params)
        direct = tiny_generator.generate([prompt], params)
        assert [(c.text, c.finish_reason) for c in out[0]] == [(c.text, c.finish_reason) for c in direct[0]]
        # usage.completion_tokens covers all choices; the client shares it out by text length
        assert sum(c.num_tokens for c in out[0]) == sum(c.num_tokens for c in direct[0])
        assert len(out[0]) == 3 and len({c.text for c in out[0]}) == 3


def test_concurrent_requests_share_decode_steps_and_stay_in_order(server, tiny_generator):
    prompts = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(12)]
    before = server.scheduler.steps
    with OpenAIGenerator(server.url, "tiny", concurrency=6, timeout_s=30) as g:
        out = g.generate(prompts, GREEDY)
    assert out == tiny_generator.generate(prompts, GREEDY)
    one_by_one = sum(c.num_tokens + (c.finish_reason == "stop") for (c,) in out)  # a step per token (+ end token)
    assert server.scheduler.steps - before < one_by_one / 2


def test_a_plain_generator_is_served_by_whole_generate_calls(tiny_generator):
    class Plain(Generator):  # only generate(): no token-by-token decoding to share
        def generate(self, prompts, params, progress=None):
            return tiny_generator.generate(prompts, params, progress)

    with make_server(Plain(), "plain") as srv, OpenAIGenerator(srv.url, "plain", concurrency=6) as g:
        prompts = [[{"role": "user", "content": f"Question number {i}?"}] for i in range(12)]
        before = srv.scheduler.calls
        assert g.generate(prompts, GREEDY) == tiny_generator.generate(prompts, GREEDY)
        assert srv.scheduler.calls - before < len(prompts)  # concurrent requests merged into shared calls
        r = post(srv, "/v1/chat/completions", {"messages": CHATS[0], "logprobs": True, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"


def test_response_layout_and_usage(server, tiny_generator):
    r = post(server, "/v1/chat/completions", {"model": "tiny", "messages": CHATS[1], "max_tokens": 6,
                                               "temperature": 0})
    assert r.status_code == 200
    data = r.json()
    assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion"
    assert data["model"] == "tiny" and isinstance(data["created"], int)
    (choice,) = data["choices"]
    expected = tiny_generator.generate([CHATS[1]], SamplingParams(max_new_tokens=6))[0][0]
    assert choice["index"] == 0 and choice["message"] == {"role": "assistant", "content": expected.text}
    assert choice["finish_reason"] == expected.finish_reason
    usage = data["usage"]
    assert usage["prompt_tokens"] == len(render_prompt(tiny_generator.tokenizer, CHATS[1]))
    assert usage["completion_tokens"] == expected.num_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    r = post(server, "/v1/completions", {"model": "tiny", "prompt": RAW, "n": 2, "max_tokens": 4,
                                         "temperature": 0.8, "seed": 1, "stop": ["\n"]})
    data = r.json()
    assert data["object"] == "text_completion" and [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert all(isinstance(c["text"], str) and c["finish_reason"] in ("stop", "length") for c in data["choices"])


def test_models_and_health(server):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    models = httpx.get(server.url + "/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["tiny"]


@pytest.mark.parametrize(("path", "body", "status", "param"), [
    ("/v1/chat/completions", {"model": "tiny"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 3}]}, 400, "messages[0].content"),
    ("/v1/chat/completions", {"messages": CHATS[0], "n": 0}, 400, "n"),
    ("/v1/chat/completions", {"messages": CHATS[0], "n": "2"}, 400, "n"),
    ("/v1/chat/completions", {"messages": CHATS[0], "temperature": -1}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": CHATS[0], "top_p": 0}, 400, "top_p"),
    ("/v1/chat/completions", {"messages": CHATS[0], "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/chat/completions", {"messages": CHATS[0], "seed": 1.5}, 400, "seed"),
    ("/v1/chat/completions", {"messages": CHATS[0], "stop": 5}, 400, "stop"),
    ("/v1/chat/completions", {"messages": CHATS[0], "stream": "yes"}, 400, "stream"),
    ("/v1/chat/completions", {"messages": CHATS[0], "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("/v1/chat/completions", {"messages": CHATS[0], "top_logprobs": 2}, 400, "top_logprobs"),
    ("/v1/chat/completions", {"messages": CHATS[0], "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
    ("/v1/completions", {"prompt": "Hi", "logprobs": True}, 400, "logprobs"),
    ("/v1/chat/completions", {"messages": CHATS[0], "temperature": float("nan")}, 400, "temperature"),
    ("/v1/chat/completions", {"messages": CHATS[0], "top_p": float("inf")}, 400, "top_p"),
    ("/v1/chat/completions", {"messages": CHATS[0], "model": "gpt-9"}, 404, "model"),
    ("/v1/completions", {"prompt": [1, 2, 3]}, 400, "prompt"),
    ("/v1/completions", {"prompt": ["x"] * 1000}, 400, "prompt"),  # over --max-prompts-per-request (64)
    ("/v1/completions", {"prompt": ["fine", ""]}, 400, "prompt[1]"),
    ("/v1/completions", {"prompt": "Hello"}, 200, None),
    ("/v1/completions", {}, 400, "prompt"),
    ("/v1/embeddings", {"input": "x"}, 404, None),
])
def test_invalid_requests_get_openai_errors(server, path, body, status, param):
    body.setdefault("max_tokens", 2) if status == 200 else None
    r = post(server, path, body)
    assert r.status_code == status
    if status != 200:
        error = r.json()["error"]
        assert error["param"] == param and isinstance(error["message"], str) and error["type"]


def test_malformed_bodies(server):
    r = httpx.post(server.url + "/v1/chat/completions", content=b"{not json", timeout=10)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = post(server, "/v1/chat/completions", [1, 2])
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
    assert httpx.get(server.url + "/v1/chat/completions").status_code == 405


def test_client_errors_fail_at_once(server, tiny_generator):
    with OpenAIGenerator(server.url + "/v1", "no-such-model", max_retries=5, backoff_s=2.0) as g:
        with pytest.raises(GenerationError, match="does not exist") as info:
            g.generate([CHATS[0]], GREEDY)
    assert info.value.status == 404 and info.value.attempts == 1
    too_long = [{"role": "user", "content": "word " * 2100}]  # beyond the tiny model's 2048 positions
    with OpenAIGenerator(server.url + "/v1", "tiny", max_retries=5, backoff_s=2.0) as g:
        with pytest.raises(GenerationError, match="context") as info:
            g.generate([too_long], GREEDY)
    assert info.value.status == 400


def test_a_failing_request_does_not_fail_its_batch_mates(server):
    too_long = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 2100}], "max_tokens": 3,
                "temperature": 0}
    fine = {"model": "tiny", "messages": CHATS[0], "max_tokens": 3, "temperature": 0}
    statuses = {}

    def send(name, body):
        statuses[name] = post(server, "/v1/chat/completions", body).status_code

    threads = [threading.Thread(target=send, args=(f"{kind}{i}", body))
               for i in range(3) for kind, body in (("long", too_long), ("fine", fine))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {k: v for k, v in statuses.items() if k.startswith("fine")} == {f"fine{i}": 200 for i in range(3)}
    assert {k: v for k, v in statuses.items() if k.startswith("long")} == {f"long{i}": 400 for i in range(3)}


def test_cli_builds_a_server_for_a_checkpoint(tiny_model_dir, tiny_generator, capsys):
    args = build_parser().parse_args(["--model", str(tiny_model_dir), "--port", "0",
                                      "--served-model-name", "cli-tiny", "--default-max-tokens", "5"])
    with server_from_args(args) as srv:
        models = httpx.get(srv.url + "/v1/models").json()
        with OpenAIGenerator(srv.url, "cli-tiny") as g:
            out = g.generate([CHATS[0]], GREEDY)
        r = post(srv, "/v1/completions", {"prompt": RAW[0], "temperature": 0})
    assert [m["id"] for m in models["data"]] == ["cli-tiny"]
    assert out == tiny_generator.generate([CHATS[0]], GREEDY)
    assert r.json()["usage"]["completion_tokens"] <= 5
    assert main(["--model", "/no/such/checkpoint", "--port", "0"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_limit_and_key_flags_and_bad_values_refused_before_any_model_loads(capsys):
    args = build_parser().parse_args(["--api-key", "k", "--max-prompts-per-request", "5", "--max-body-bytes", "999"])
    assert args.api_key == "k"
    assert limits_from_args(args) == Limits(max_prompts_per_request=5, max_body_bytes=999)
    assert main(["--model", "/no/such/checkpoint", "--max-prompts-in-flight", "2", "--max-prompts-per-request",
                 "3"]) == 2
    err = capsys.readouterr().err
    assert "--max-prompts-in-flight must be at least --max-prompts-per-request" in err and "does not exist" not in err


def test_the_decode_thread_computes_with_prepacked_layers_while_it_runs(tiny_model_dir):
    """The served weights do not change, so the scheduler's thread packs them once (openrft.models.packed) for its
    whole life, and the model's layers are as they were after it stops."""
    from torch import nn

    from openrft.models import packed
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.serve.scheduler import EngineScheduler

    if not packed.available():
        pytest.skip("this torch has no oneDNN prepacked linear")
    generator = TransformersGenerator.from_pretrained(str(tiny_model_dir), batch_size=4)
    linears = [m for m in generator.model.modules() if type(m) is nn.Linear]
    scheduler = EngineScheduler(generator)
    try:
        for _ in range(100):
            if all("forward" in vars(m) for m in linears):
                break
            threading.Event().wait(0.05)
        assert all("forward" in vars(m) for m in linears)
    finally:
        scheduler.close()
    assert not any("forward" in vars(m) for m in linears)
    unpacked = EngineScheduler(TransformersGenerator(generator.model, generator.tokenizer, prepack=False))
    try:
        threading.Event().wait(0.2)
        assert not any("forward" in vars(m) for m in linears)
    finally:
        unpacked.close()
