"""``openrft serve`` through the official ``openai`` client: streaming, logprobs, auth, limits, fairness, cancellation."""

from __future__ import annotations

import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import torch

from openrft.models.backends.base import Generator, SamplingParams
from openrft.models.backends.hf import TransformersGenerator, render_prompt
from openrft.serve import Limits, make_server

CHAT = [{"role": "user", "content": "Name a colour."}]
RAW = ["The capital of France is", "1, 2, 3,"]


@pytest.fixture(scope="module")
def server(tiny_generator):
    with make_server(tiny_generator, "tiny") as srv:
        yield srv


def client_for(srv, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture
def client(server):
    with client_for(server) as c:
        yield c


def wait_for(condition, what: str, timeout_s: float = 60) -> None:
    """Poll ``condition`` until it holds (a liveness bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_non_streaming_n_stop_and_seed_match_direct(client, tiny_generator):
    r = client.chat.completions.create(model="tiny", messages=CHAT, n=3, temperature=1.0, seed=7, max_tokens=8)
    direct = tiny_generator.generate([CHAT], SamplingParams(n=3, temperature=1.0, seed=7, max_new_tokens=8))[0]
    assert [(c.index, c.message.content, c.finish_reason) for c in r.choices] == \
        [(i, d.text, d.finish_reason) for i, d in enumerate(direct)]
    assert r.usage.completion_tokens == sum(d.num_tokens for d in direct)
    whole = tiny_generator.generate([RAW[0]], SamplingParams(max_new_tokens=20))[0][0].text
    stop = whole[len(whole) // 2: len(whole) // 2 + 2]
    r = client.completions.create(model="tiny", prompt=RAW[0], max_tokens=20, temperature=0, stop=[stop])
    assert r.choices[0].text == tiny_generator.generate([RAW[0]], SamplingParams(max_new_tokens=20, stop=(stop,)))[0][0].text
    assert stop not in r.choices[0].text and whole.startswith(r.choices[0].text)


def test_streamed_chat_adds_up_to_the_whole_reply(client):
    kw = dict(model="tiny", messages=CHAT, n=2, temperature=1.0, seed=3, max_tokens=12)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks[:-1] if c.choices[0].index == choice.index]
        assert mine[0].delta.role == "assistant"
        assert "".join(m.delta.content or "" for m in mine) == choice.message.content
        assert [m.finish_reason for m in mine] == [None] * (len(mine) - 1) + [choice.finish_reason]


def test_stream_is_server_sent_events_ending_with_done(server):
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 5, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=60) as r:
        raw = r.read().decode()
    assert r.headers["content-type"].startswith("text/event-stream")
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: {") for e in events[:-2])
    assert json.loads(events[-3][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_streamed_completions_with_logprobs(client):
    kw = dict(model="tiny", prompt=RAW, max_tokens=6, temperature=0, logprobs=2)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(**kw, stream=True))
    for choice in whole.choices:
        mine = [c.choices[0] for c in chunks if c.choices[0].index == choice.index]
        assert "".join(m.text for m in mine) == choice.text and mine[-1].finish_reason == choice.finish_reason
        streamed = [t for m in mine if m.logprobs for t in m.logprobs.tokens]
        assert streamed == choice.logprobs.tokens and "".join(streamed) == choice.text
        lp = choice.logprobs
        assert len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == len(lp.tokens)
        assert all(len(top) <= 2 and max(top.values()) == chosen for top, chosen in zip(lp.top_logprobs,
                                                                                       lp.token_logprobs))
        assert lp.text_offset == [sum(map(len, lp.tokens[:i])) for i in range(len(lp.tokens))]


def test_chat_logprobs_are_the_models(client, tiny_generator):
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=4, temperature=0, logprobs=True,
                                       top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].token == t.token
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
        assert t.bytes == list(t.token.encode())
    ids = torch.tensor([render_prompt(tiny_generator.tokenizer, CHAT)])
    with torch.no_grad():
        expected = torch.log_softmax(tiny_generator.model(ids).logits[0, -1].float(), -1).max().item()
    assert abs(content[0].logprob - expected) < 1e-4


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-9")


def test_api_key(tiny_generator, caplog):
    with make_server(tiny_generator, "tiny", api_key="sekret") as srv:
        with client_for(srv, "wrong") as c, pytest.raises(openai.AuthenticationError, match="incorrect API key"):
            c.models.list()
        r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": CHAT})  # no key
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(srv.url + "/health").status_code == 200
        with client_for(srv, "sekret") as c:
            assert c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).choices[0].finish_reason
            assert [m.id for m in c.models.list()] == ["tiny"]
    with caplog.at_level(logging.WARNING, logger="openrft.serve.server"):
        make_server(tiny_generator, "tiny", host="0.0.0.0").stop()
        make_server(tiny_generator, "tiny", host="0.0.0.0", api_key="k").stop()
    assert len([r for r in caplog.records if "without an API key" in r.message]) == 1


def test_limits_name_their_flags_and_max_tokens_is_clamped(tiny_generator):
    small = TransformersGenerator(tiny_generator.model, tiny_generator.tokenizer, batch_size=8)
    small.max_positions = 64  # the context max_tokens is clamped to
    limits = Limits(max_body_bytes=4000, max_prompts_per_request=3, max_tokens_per_request=600,
                    max_prompts_in_flight=4, max_tokens_in_flight=700)
    with make_server(small, "tiny", limits=limits) as srv, client_for(srv) as c:
        def refusal(kind, **kw):
            with pytest.raises(kind) as info:
                (c.chat.completions if "messages" in kw else c.completions).create(model="tiny", **kw)
            return info.value.status_code, info.value.message

        assert refusal(openai.APIStatusError, prompt="x" * 5000)[0] == 413
        assert "--max-body-bytes" in refusal(openai.APIStatusError, prompt="x" * 5000)[1]
        chunked = httpx.post(srv.url + "/v1/completions", content=iter([b'{"prompt": "', b"x" * 5000, b'"}']))
        assert chunked.status_code == 413  # no Content-Length: counted as it arrives
        assert "--max-prompts-per-request" in refusal(openai.BadRequestError, prompt=["a", "b", "c", "d"])[1]
        assert "--max-tokens-per-request" in refusal(openai.BadRequestError, messages=CHAT, n=10, max_tokens=10**9)[1]
        r = c.chat.completions.create(model="tiny", messages=CHAT, max_tokens=10**9, temperature=0)
        assert r.choices[0].finish_reason == "length" and r.usage.total_tokens == 64
        held = c.completions.create(model="tiny", prompt=RAW, n=4, max_tokens=10**9, temperature=0, stream=True)
        next(iter(held))  # holds 2 prompts and 512 tokens in flight
        status, message = refusal(openai.RateLimitError, prompt=["a", "b", "c"], max_tokens=5)
        assert status == 429 and "--max-prompts-in-flight" in message
        assert "--max-tokens-in-flight" in refusal(openai.RateLimitError, prompt=RAW, n=4, max_tokens=10**9)[1]
        held.close()
        wait_for(lambda: srv.state.in_flight.tokens == 0, "the cancelled request to release its share")
        assert len(c.completions.create(model="tiny", prompt=["a", "b", "c"], max_tokens=5).choices) == 3


def test_50_concurrent_requests_without_a_reset(client, tiny_generator):
    prompts = [[{"role": "user", "content": f"Question {i}?"}] for i in range(50)]
    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda p: client.chat.completions.create(model="tiny", messages=p, max_tokens=4,
                                                                           temperature=0), prompts))
    direct = tiny_generator.generate(prompts, SamplingParams(max_new_tokens=4))
    assert [r.choices[0].message.content for r in replies] == [d[0].text for d in direct]


@pytest.mark.parametrize("n", [4, 8])  # 8 fills every slot of the batch: the short request preempts one
def test_a_short_request_does_not_wait_for_a_long_one_which_stops_when_its_client_leaves(server, client, n):
    sched = server.scheduler
    cancelled, preempted, tokens = sched.cancelled, sched.preempted, sched.tokens
    long = client.chat.completions.create(model="tiny", messages=CHAT, n=n, max_tokens=10**9, temperature=0,
                                          stream=True)
    assert any(chunk.choices[0].delta.content for chunk in long)  # the long request is decoding (returns at once)
    short = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                           temperature=0)
    assert short.choices[0].finish_reason in ("stop", "length")
    assert any(row.params.max_new_tokens == 10**9 for row in sched.batch.rows)  # the long one is still decoding
    long.close()  # the client leaves: the server cancels the long request, which is still running
    wait_for(lambda: sched.cancelled == cancelled + 1, "the long request to be cancelled")
    assert sched.batch.rows == [] and sched.tokens - tokens < n * (2048 - 30)  # nothing left generating, budget unspent
    assert (sched.preempted > preempted) == (n == 8)


def test_a_non_streaming_request_stops_when_its_client_leaves(server):
    sched = server.scheduler
    cancelled = sched.cancelled
    body = json.dumps({"model": "tiny", "messages": CHAT, "max_tokens": 10**9, "temperature": 0}).encode()
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: sched.batch.rows, "the request to start decoding")
    wait_for(lambda: sched.cancelled == cancelled + 1, "the request to be cancelled")
    assert sched.batch.rows == []


def test_a_plain_generator_streams_each_choice_whole(tiny_generator):
    class Plain(Generator):
        def generate(self, prompts, params, progress=None):
            return tiny_generator.generate(prompts, params, progress)

    with make_server(Plain(), "plain") as srv, client_for(srv) as c:
        chunks = list(c.completions.create(model="plain", prompt=RAW, max_tokens=5, temperature=0, stream=True))
    direct = tiny_generator.generate(RAW, SamplingParams(max_new_tokens=5))
    for i, (d,) in enumerate(direct):
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices[0].index == i) == d.text
