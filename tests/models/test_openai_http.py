"""The OpenAI-compatible HTTP client: request mapping, retries, failures, and the on-disk cache.

Fault injection uses a scripted stdlib server that misbehaves on purpose (garbage, 500, 429,
slow replies, ignored ``n``: ``tests/scripted_http.py``); cache-and-restart behaviour is tested against
``openrft serve`` running the tiny real model.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
from scripted_http import client, scripted  # noqa: F401  (scripted is a fixture)

from openrft.models.backends.base import Completion, Generator, SamplingParams
from openrft.models.backends.cache import ResponseCache, cache_key
from openrft.models.backends.openai_http import GenerationError, parse_choices
from openrft.serve import make_server

SAMPLE = SamplingParams(n=3, temperature=1.0, seed=5, max_new_tokens=8)
GREEDY = SamplingParams(max_new_tokens=8)


def chat(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------ request mapping
def test_request_body_headers_and_endpoints(scripted, monkeypatch):
    script, url = scripted()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    gen = client(url.removesuffix("/v1"), extra_body={"top_k": 5, "max_tokens": None, "max_completion_tokens": 9})
    assert gen.base_url == url  # a bare host gets /v1
    params = SamplingParams(n=2, temperature=0.7, top_p=0.9, max_new_tokens=9, seed=11, stop=("\n\n",))
    out = gen.generate([chat("hi"), "raw text"], params)
    assert [len(o) for o in out] == [2, 2]
    assert out[0][0] == Completion("hi|seed=11|0", 2, "stop")
    assert out[1][1] == Completion("raw text|seed=11|1", 2, "length")
    by_path = {path: (headers, body) for path, headers, body in script.requests}
    headers, body = by_path["/v1/chat/completions"]
    assert headers["Authorization"] == "Bearer sk-env"
    assert body == {"model": "m", "messages": chat("hi"), "n": 2, "temperature": 0.7, "top_p": 0.9,
                    "stop": ["\n\n"], "seed": 11, "top_k": 5, "max_completion_tokens": 9}
    assert by_path["/v1/completions"][1]["prompt"] == "raw text"
    explicit = client(url, api_key="sk-arg")
    explicit.generate(["x"], GREEDY)
    assert script.requests[-1][1]["Authorization"] == "Bearer sk-arg"


def test_parse_choices_tokens_order_and_finish_reason():
    data = {"choices": [{"index": 1, "text": "abcdefg", "finish_reason": "length"},
                        {"index": 0, "text": "abc", "finish_reason": None}],
            "usage": {"completion_tokens": 10}}
    assert parse_choices(data, chat=False) == [Completion("abc", 3, "stop"), Completion("abcdefg", 7, "length")]
    no_usage = {"choices": [{"message": {"role": "assistant", "content": "x" * 40}}, {"message": {"content": None}}]}
    assert [c.num_tokens for c in parse_choices(no_usage, chat=True)] == [10, 0]
    for bad in ([], {"choices": []}, {"choices": [{"text": 3}]}, {"error": "overloaded"}):
        with pytest.raises(ValueError):
            parse_choices(bad, chat=False)


def test_progress_duplicates_and_greedy_dedup(scripted):
    script, url = scripted()
    seen = []
    out = client(url).generate([chat("a"), chat("b"), chat("a")], SamplingParams(n=2, temperature=0),
                               progress=lambda d, t: seen.append((d, t)))
    assert sum(d for d, _ in seen) == 6 and sum(t for _, t in seen) > 0
    assert len(script.requests) == 2 and all("n" not in b for _, _, b in script.requests)  # greedy: one sample
    assert out[0] == out[2] and out[0][0] == out[0][1]
    # sampling: the repeat of a prompt gets other samples (indices 2, 3), not copies
    out = client(url).generate([chat("a"), chat("a")], SamplingParams(n=2, temperature=1.0, seed=3))
    assert len({c.text for row in out for c in row}) == 4


# ------------------------------------------------------------ retries and failures
def test_5xx_garbage_and_dropped_connections_are_retried(scripted):
    script, url = scripted([(500, {"error": {"message": "boom"}}), "garbage", (503, b"busy"), "no_choices", "close"])
    out = client(url, max_retries=5).generate([chat("q")], GREEDY)
    assert out[0][0].text.startswith("q|")
    assert len(script.requests) == 6


def test_retry_after_is_honoured(scripted):
    script, url = scripted([(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.4"})])
    start = time.monotonic()
    client(url, backoff_s=0.001).generate(["q"], GREEDY)
    assert time.monotonic() - start >= 0.4 and len(script.requests) == 2


def test_4xx_fails_at_once_with_server_message(scripted):
    script, url = scripted([(400, {"error": {"message": "messages[0].role is invalid"}})] * 10)
    with pytest.raises(GenerationError) as info:
        client(url, max_retries=5, backoff_s=1.0).generate([chat("q")], GREEDY)
    err = info.value
    assert err.status == 400 and "messages[0].role is invalid" in str(err) and url in err.url
    assert len(script.requests) == 1


def test_retries_exhausted_names_url_status_and_error(scripted):
    script, url = scripted([(502, b"bad gateway")] * 10)
    with pytest.raises(GenerationError) as info:
        client(url, max_retries=2).generate(["q"], GREEDY)
    assert info.value.status == 502 and info.value.attempts == 3 and len(script.requests) == 3
    assert "bad gateway" in str(info.value) and f"{url}/completions" in str(info.value)


def test_timeout_then_recovery_and_exhaustion(scripted):
    script, url = scripted([("sleep", 1.5)])
    start = time.monotonic()
    assert client(url, timeout_s=0.3).generate(["q"], GREEDY)[0][0].text.startswith("q|")
    assert time.monotonic() - start < 1.4 and len(script.requests) == 2
    script, url = scripted(per_request=lambda body: ("sleep", 1.0))
    with pytest.raises(GenerationError, match="timed out"):
        client(url, timeout_s=0.2, max_retries=1).generate(["q"], GREEDY)


def test_server_down_retries_then_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    start = time.monotonic()
    with pytest.raises(GenerationError) as info:
        client(url, max_retries=2).generate([chat("q")], GREEDY)
    assert time.monotonic() - start < 5
    err = info.value
    assert err.status is None and err.attempts == 3 and err.url == f"{url}/chat/completions"
    assert "ConnectError" in err.last_error and "server is up" in str(err)


def test_n_rejected_or_ignored_falls_back_to_one_request_per_sample(scripted):
    script, url = scripted(per_request=lambda body: "reject_n")
    gen = client(url)
    out = gen.generate(["p"], SAMPLE)
    assert len({c.text for c in out[0]}) == 3  # each single request had its own seed
    assert [b.get("n", 1) for _, _, b in script.requests] == [3, 1, 1, 1]
    gen.generate(["other"], SAMPLE)  # remembered: no more n > 1
    assert [b.get("n", 1) for _, _, b in script.requests[4:]] == [1, 1, 1]
    script, url = scripted(per_request=lambda body: "one_choice")
    out = client(url).generate(["p"], SAMPLE)
    assert len({c.text for c in out[0]}) == 3 and len(script.requests) == 3


# ------------------------------------------------------------ cache
def test_cache_entries_are_atomic_and_survive_corruption(tmp_path):
    cache = ResponseCache(tmp_path)
    keys = [cache_key({"i": i % 4}) for i in range(64)]

    def write(i):
        cache.put(keys[i], {"i": i % 4, "pad": "x" * 10_000})

    threads = [threading.Thread(target=write, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 4 and all(cache.get(k)["i"] == i % 4 for i, k in enumerate(keys))
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    cache.path(keys[0]).write_text('{"i": 0, "pad": "xx')  # a half-written file (not ours) is a miss
    assert cache.get(keys[0]) is None


def test_finished_requests_are_cached_when_another_fails(scripted, tmp_path):
    script, url = scripted(per_request=lambda body: (400, {"error": {"message": "bad prompt"}})
                           if body["prompt"] == "bad" else ("sleep", 0.2))
    prompts = ["a", "b", "bad", "c"]
    with pytest.raises(GenerationError, match="bad prompt") as info:
        client(url, cache_dir=tmp_path, concurrency=4).generate(prompts, GREEDY)
    assert "rerun" in str(info.value)
    before = len(script.requests)
    out = client(url, cache_dir=tmp_path).generate(["a", "b", "c"], GREEDY)
    assert [o[0].text.split("|")[0] for o in out] == ["a", "b", "c"] and len(script.requests) == before


class CountingGenerator(Generator):
    """Serves the real tiny model and records what it was asked for."""

    def __init__(self, inner: Generator):
        self.inner, self.calls = inner, []

    def generate(self, prompts, params, progress=None):
        self.calls.append((len(prompts), params.n))
        return self.inner.generate(prompts, params, progress)


def test_rerun_after_server_died_pays_only_missing_items(tiny_generator, tmp_path):
    counting = CountingGenerator(tiny_generator)
    server = make_server(counting, "tiny").start()
    url = server.url + "/v1"
    first = client(url, model="tiny", cache_dir=tmp_path).generate([chat("a"), chat("b")], GREEDY)
    sampled = client(url, model="tiny", cache_dir=tmp_path).generate(["c"], SamplingParams(n=2, temperature=1.0, seed=1,
                                                                            max_new_tokens=6))
    server.stop()

    down = client(url, model="tiny", cache_dir=tmp_path, max_retries=1)
    assert down.generate([chat("a"), chat("b")], GREEDY) == first  # all cached: no server needed
    with pytest.raises(GenerationError, match="1 of 1 requests failed") as info:
        down.generate([chat("a"), chat("b"), chat("new")], GREEDY)
    assert info.value.status is None and url in info.value.url

    counting.calls.clear()
    server = make_server(counting, "tiny").start()  # back up, on another port: the cache does not key on host
    try:
        gen = client(server.url + "/v1", model="tiny", cache_dir=tmp_path)
        again = gen.generate([chat("a"), chat("b"), chat("new")], GREEDY)
        more = gen.generate(["c"], SamplingParams(n=4, temperature=1.0, seed=1, max_new_tokens=6))
    finally:
        server.stop()
    assert again[:2] == first and again[2][0] == tiny_generator.generate([chat("new")], GREEDY)[0][0]
    assert more[0][:2] == sampled[0]  # samples 0-1 from the cache, 2-3 fetched in one request
    assert counting.calls == [(1, 1), (1, 2)]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))
    assert os.listdir(tmp_path)


KILLED_CLIENT = """
import sys
from openrft.models.backends.base import SamplingParams
from openrft.models.backends.openai_http import OpenAIGenerator
gen = OpenAIGenerator(sys.argv[1], "m", cache_dir=sys.argv[2], concurrency=2)
gen.generate([f"p{i}" for i in range(40)], SamplingParams(max_new_tokens=8))
"""


def test_kill_9_midway_loses_only_requests_in_flight(scripted, tmp_path):
    import signal
    import subprocess
    import sys

    script, url = scripted(per_request=lambda body: ("sleep", 0.05))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, url, str(tmp_path / "cache")])
    try:
        deadline = time.monotonic() + 20
        while len(script.requests) < 10 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL and len(script.requests) >= 10
    cache = ResponseCache(tmp_path / "cache")
    done = len(cache)
    assert done >= 8  # at most `concurrency` requests were in flight when it died
    before = len(script.requests)
    out = client(url, cache_dir=tmp_path / "cache").generate([f"p{i}" for i in range(40)], GREEDY)
    assert [o[0].text.split("|")[0] for o in out] == [f"p{i}" for i in range(40)]
    assert len(script.requests) - before == 40 - done


def test_client_settings_are_readable():
    from openrft.models.backends.openai_http import OpenAIGenerator

    gen = OpenAIGenerator("http://127.0.0.1:9/v1", "m", timeout_s=7, max_retries=2)
    try:
        assert (gen.timeout_s, gen.max_retries) == (7, 2)
    finally:
        gen.close()
