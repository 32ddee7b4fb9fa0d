"""Remote process scorer over HTTP, and a tiny server that exposes any local scorer the same way.

Protocol: ``POST <url>`` with ``{"items": [{"question": str, "steps": [str, ...]}, ...]}``;
the reply is ``{"scores": [[float, ...], ...]}``, one list per item and one score in
[0, 1] per step. Completions without steps are not sent.

Reliability: connection errors, timeouts, 408/429/5xx are retried with exponential backoff
and jitter (``Retry-After`` honoured); another 4xx fails at once with the server's message;
a 200 whose body is not a well-formed reply (bad JSON, missing ``scores``, wrong number of
lists or of scores, a score outside [0, 1]) fails at once, naming the item at fault.

Serve a local PRM on another machine (the GPU box) and score from the trainer::

    from openrft.rewards.prm.loader import load_scorer
    serve_scorer(load_scorer("path/to/prm"), host="0.0.0.0", port=8765)     # there
    load_scorer("http://gpu-box:8765/score")                                   # here
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from openrft.rewards.prm.base import ProcessScorer, check_scores

__all__ = ["RemoteScorer", "RemoteScorerError", "make_scorer_server", "serve_scorer"]

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429})


class RemoteScorerError(RuntimeError):
    """A scoring request failed for good; ``url`` and ``status`` (None without a response) say where and how."""

    def __init__(self, message: str, *, url: str, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _message(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            if data.get(key):
                return str(data[key])[:1000]
    return (resp.text or resp.reason_phrase or "")[:1000]


def parse_scores(data: Any, steps: Sequence[Sequence[str]], url: str) -> list[list[float]]:
    """The ``scores`` of a reply body, checked against the steps sent (``ValueError`` naming what is wrong)."""
    if not isinstance(data, dict) or "scores" not in data:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"reply from {url} has no 'scores' list (got {keys})")
    scores = data["scores"]
    if not isinstance(scores, list) or len(scores) != len(steps):
        n = len(scores) if isinstance(scores, list) else type(scores).__name__
        raise ValueError(f"reply from {url} has {n} score lists for {len(steps)} items")
    out = []
    for i, (sc, st) in enumerate(zip(scores, steps)):
        if not isinstance(sc, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in sc):
            raise ValueError(f"reply from {url}: scores of item {i} are not a list of numbers: {str(sc)[:200]}")
        vals = check_scores(sc, len(st), f"{url} (item {i})")
        bad = [k for k, x in enumerate(vals) if not 0.0 <= x <= 1.0]
        if bad:
            raise ValueError(f"reply from {url}: item {i} has scores outside [0, 1] at step(s) {bad}")
        out.append(vals)
    return out


class RemoteScorer(ProcessScorer):
    """Process scorer behind an HTTP endpoint (see the module docstring for the protocol).

    Args:
        url: the endpoint, e.g. ``http://127.0.0.1:8765/score``.
        timeout_s: per-request timeout (connect, read, write).
        max_retries: retries after the first attempt for retryable failures.
        backoff_s: first retry delay; doubles per retry with jitter, capped at ``max_backoff_s``.
        batch_size: items per request.
        headers: extra HTTP headers (e.g. ``Authorization``).
    """

    name = "remote"

    def __init__(self, url: str, timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, batch_size: int = 64, headers: Mapping[str, str] | None = None):
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"remote scorer URL must be http(s)://host[:port]/path, got {url!r}")
        if timeout_s <= 0 or max_retries < 0 or batch_size < 1:
            raise ValueError("need timeout_s > 0, max_retries >= 0, batch_size >= 1")
        self.url = url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.batch_size = batch_size
        self.requests = 0  # HTTP attempts made, for tests and logs
        self._client = httpx.Client(headers={"User-Agent": "openrft", **dict(headers or {})},
                                    timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)))

    def __repr__(self) -> str:
        return f"RemoteScorer({self.url!r})"

    @classmethod
    def from_pretrained(cls, path: str, device=None, dtype=None, batch_size: int = 64, **kwargs) -> "RemoteScorer":
        """Same signature as the local scorers; ``path`` is the URL and ``device``/``dtype`` are ignored."""
        return cls(path, batch_size=batch_size, **kwargs)

    def close(self) -> None:
        self._client.close()

    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        if len(questions) != len(steps):
            raise ValueError(f"{len(questions)} questions for {len(steps)} step lists")
        out: list[list[float]] = [[] for _ in steps]
        todo = [i for i, st in enumerate(steps) if len(st)]
        for b in range(0, len(todo), self.batch_size):
            idx = todo[b: b + self.batch_size]
            items = [{"question": str(questions[i]), "steps": [str(s) for s in steps[i]]} for i in idx]
            got = self._post({"items": items}, [it["steps"] for it in items])
            for i, sc in zip(idx, got):
                out[i] = sc
        return out

    def _post(self, body: dict, sent_steps: list[list[str]]) -> list[list[float]]:
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            try:
                return self._attempt(body, sent_steps)
            except _Retryable as err:
                last = err
            if attempt == self.max_retries:
                break
            delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            delay = delay / 2 + random.uniform(0, delay / 2)
            if last.retry_after is not None:
                delay = max(delay, min(last.retry_after, 300.0))
            logger.warning("POST %s failed (%s); retry %d/%d in %.2fs", self.url, last, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        assert last is not None
        status = f"status {last.status}" if last.status is not None else "no response"
        raise RemoteScorerError(
            f"POST {self.url} failed after {self.max_retries + 1} attempts ({status}): {last}. "
            "Check that the scorer server is up at this URL, or raise max_retries / timeout_s.",
            url=self.url, status=last.status,
        )

    def _attempt(self, body: dict, sent_steps: list[list[str]]) -> list[list[float]]:
        self.requests += 1
        try:
            resp = self._client.post(self.url, json=body)
        except httpx.TimeoutException as err:
            raise _Retryable(f"timed out after {self.timeout_s}s ({type(err).__name__})") from None
        except httpx.TransportError as err:
            raise _Retryable(f"{type(err).__name__}: {err}") from None
        status = resp.status_code
        if status in RETRY_STATUSES or status >= 500:
            retry_after = resp.headers.get("retry-after")
            try:
                wait = float(retry_after) if retry_after is not None else None
            except ValueError:
                wait = None
            raise _Retryable(_message(resp) or resp.reason_phrase, status, wait)
        if not 200 <= status < 300:
            raise RemoteScorerError(f"POST {self.url} was rejected with status {status}: {_message(resp)}",
                                    url=self.url, status=status)
        try:
            return parse_scores(resp.json(), sent_steps, self.url)
        except ValueError as err:  # includes JSON decoding errors
            snippet = resp.text[:200].replace("\n", " ")
            raise RemoteScorerError(f"malformed reply from {self.url}: {err}; body starts {snippet!r}",
                                    url=self.url, status=status) from None


# ---------------------------------------------------------------------------- server side
def _parse_items(data: Any) -> tuple[list[str], list[list[str]]]:
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise ValueError("expected a JSON object {\"items\": [{\"question\": str, \"steps\": [str, ...]}, ...]}")
    questions, steps = [], []
    for i, it in enumerate(data["items"]):
        if not isinstance(it, dict) or not isinstance(it.get("question"), str) or not isinstance(it.get("steps"), list) \
                or not all(isinstance(s, str) for s in it["steps"]):
            raise ValueError(f"item {i} must be {{\"question\": str, \"steps\": [str, ...]}}")
        questions.append(it["question"])
        steps.append(it["steps"])
    return questions, steps


def make_scorer_server(scorer: ProcessScorer, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A ``ThreadingHTTPServer`` answering the scoring protocol with ``scorer`` (``port=0``: any free port).

    ``POST`` (any path) scores; ``GET`` (any path) answers ``{"ok": true, "scorer": name}``.
    Calls into the scorer are serialised by a lock (one model, one forward at a time).
    """
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._reply(200, {"ok": True, "scorer": getattr(scorer, "name", type(scorer).__name__)})

        def do_POST(self) -> None:  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length") or 0)
                questions, steps = _parse_items(json.loads(self.rfile.read(length) or b"null"))
            except ValueError as err:
                self._reply(400, {"error": f"bad request: {err}"})
                return
            try:
                with lock:
                    scores = scorer.score_batch(questions, steps)
            except Exception as err:  # reported to the client as a server error
                logger.exception("scorer failed")
                self._reply(500, {"error": f"{type(err).__name__}: {err}"})
                return
            if any(not math.isfinite(x) for sc in scores for x in sc):
                self._reply(500, {"error": "the scorer produced a non-finite score"})
                return
            self._reply(200, {"scores": scores})

        def log_message(self, fmt: str, *args) -> None:
            logger.debug("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_scorer(scorer: ProcessScorer, host: str = "127.0.0.1", port: int = 8765,
                 block: bool = True) -> ThreadingHTTPServer:
    """Serve ``scorer`` over HTTP. ``block=False`` starts it in a daemon thread and returns the server
    (``server.server_address`` has the port; ``server.shutdown()`` stops it)."""
    server = make_scorer_server(scorer, host, port)
    url = f"http://{server.server_address[0]}:{server.server_address[1]}/score"
    if block:
        logger.info("serving %s at %s", getattr(scorer, "name", "scorer"), url)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    else:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="prm-server", daemon=True).start()
    return server
