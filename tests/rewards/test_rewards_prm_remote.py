"""Remote scorer against real local HTTP servers in threads: the bundled server and misbehaving ones."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from openrft.rewards.prm.base import ProcessScorer
from openrft.rewards.prm.loader import load_scorer
from openrft.rewards.prm.remote import RemoteScorer, RemoteScorerError, serve_scorer


class LengthScorer(ProcessScorer):
    """A deterministic local scorer: longer steps score higher, capped at 1."""

    name = "length"

    def __init__(self):
        self.calls: list[tuple[list[str], list[list[str]]]] = []

    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        self.calls.append((list(questions), [list(s) for s in steps]))
        return [[min(1.0, len(s) / 20) for s in st] for st in steps]


@pytest.fixture
def served():
    scorer = LengthScorer()
    server = serve_scorer(scorer, host="127.0.0.1", port=0, block=False)
    host, port = server.server_address[:2]
    yield scorer, f"http://{host}:{port}/score"
    server.shutdown()
    server.server_close()


def scripted_server(replies):
    """A server that answers POSTs with ``replies`` in turn: (status, body bytes, delay seconds)."""
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            status, body, delay = replies[min(len(seen), len(replies)) - 1]
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up (timeout test)
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/score", seen


def ok(scores) -> tuple[int, bytes, float]:
    return 200, json.dumps({"scores": scores}).encode(), 0.0


def test_round_trip_through_serve_scorer(served):
    local, url = served
    remote = load_scorer(url, batch_size=2)
    assert isinstance(remote, RemoteScorer)
    questions = ["q1", "q2", "q3", "q4"]
    steps = [["a" * 5, "b" * 30], [], ["c" * 10], ["d"]]
    got = remote.score_batch(questions, steps)
    assert got == [[0.25, 1.0], [], [0.5], [0.05]]
    # the empty solution is not sent; 3 items at 2 per request
    assert remote.requests == 2
    assert local.calls == [(["q1", "q3"], [["a" * 5, "b" * 30], ["c" * 10]]), (["q4"], [["d"]])]
    assert remote.score_batch(["q"], [[]]) == [[]] and remote.requests == 2
    assert httpx.get(url).json() == {"ok": True, "scorer": "length"}
    bad = httpx.post(url, json={"items": [{"question": 1}]})
    assert bad.status_code == 400 and "item 0" in bad.json()["error"]
    remote.close()


def test_retries_server_errors_with_backoff():
    server, url, seen = scripted_server([(503, b'{"error": "warming up"}', 0.0), (500, b"oops", 0.0), ok([[0.5]])])
    try:
        scorer = RemoteScorer(url, backoff_s=0.01, max_retries=3)
        assert scorer.score("q", ["s"]) == [0.5]
        assert scorer.requests == 3 and len(seen) == 3
        assert seen[-1] == {"items": [{"question": "q", "steps": ["s"]}]}
    finally:
        server.shutdown()


def test_gives_up_after_retries_and_names_status():
    server, url, seen = scripted_server([(502, b'{"error": "bad gateway"}', 0.0)])
    try:
        scorer = RemoteScorer(url, backoff_s=0.01, max_retries=2)
        with pytest.raises(RemoteScorerError, match=r"after 3 attempts \(status 502\): bad gateway") as err:
            scorer.score("q", ["s"])
        assert err.value.status == 502 and len(seen) == 3
    finally:
        server.shutdown()


def test_client_error_fails_at_once():
    server, url, seen = scripted_server([(400, b'{"error": "steps must be strings"}', 0.0)])
    try:
        with pytest.raises(RemoteScorerError, match="rejected with status 400: steps must be strings"):
            RemoteScorer(url, backoff_s=0.01).score("q", ["s"])
        assert len(seen) == 1
    finally:
        server.shutdown()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "malformed reply"),
        (json.dumps({"score": [[0.5]]}).encode(), "no 'scores' list"),
        (json.dumps({"scores": [[0.5], [0.5]]}).encode(), "2 score lists for 1 items"),
        (json.dumps({"scores": [[0.5, 0.5]]}).encode(), "returned 2 step scores for 1 steps"),
        (json.dumps({"scores": [[1.5]]}).encode(), r"outside \[0, 1\]"),
        (json.dumps({"scores": [["high"]]}).encode(), "not a list of numbers"),
    ],
)
def test_malformed_replies_fail_clearly(body, message):
    server, url, seen = scripted_server([(200, body, 0.0)])
    try:
        with pytest.raises(RemoteScorerError, match=message):
            RemoteScorer(url, backoff_s=0.01).score("q", ["s"])
        assert len(seen) == 1
    finally:
        server.shutdown()


def test_timeout_and_connection_refused():
    server, url, seen = scripted_server([(200, json.dumps({"scores": [[0.5]]}).encode(), 1.0)])
    try:
        with pytest.raises(RemoteScorerError, match="timed out after 0.2s"):
            RemoteScorer(url, timeout_s=0.2, max_retries=1, backoff_s=0.01).score("q", ["s"])
        assert len(seen) == 2
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(RemoteScorerError, match="no response"):
        RemoteScorer(url, max_retries=0).score("q", ["s"])  # the port is closed now
    with pytest.raises(ValueError, match="http"):
        RemoteScorer("ftp://example.org/score")


def test_server_reports_scorer_failures_as_500():
    class Broken(ProcessScorer):
        def score_batch(self, questions, steps):
            raise RuntimeError("CUDA out of memory")

    server = serve_scorer(Broken(), port=0, block=False)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(RemoteScorerError, match="status 500.*CUDA out of memory"):
            RemoteScorer(url, max_retries=1, backoff_s=0.01).score("q", ["s"])
    finally:
        server.shutdown()
        server.server_close()
