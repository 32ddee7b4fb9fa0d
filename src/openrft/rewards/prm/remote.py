"""Remote process scorer over HTTP, and a tiny server that exposes any local scorer the same way.

Protocol (:mod:`openrft.rewards.prm.protocol`): ``POST <url>`` with ``{"items": [{"question": str, "steps":
[str, ...]}, ...]}``; the reply is ``{"scores": [[float, ...], ...]}``, one list per item and one score in
[0, 1] per step. Completions without steps are not sent.

Reliability (:mod:`openrft.models.http`, the client and server every openrft HTTP peer uses):
connection errors, timeouts, 408/429/5xx are retried with exponential backoff and jitter
(``Retry-After`` honoured); another 4xx fails at once with the server's message;
a 200 whose body is not a well-formed reply (bad JSON, missing ``scores``, wrong number of
lists or of scores, a score outside [0, 1]) fails at once, naming the item at fault.

Serve a local PRM on another machine (the GPU box) and score from the trainer::

    openrft prm serve --prm path/to/prm --host 0.0.0.0 --port 8765            # there (or, in Python:
    # serve_scorer(load_scorer("path/to/prm"), host="0.0.0.0", port=8765))
    load_scorer("http://gpu-box:8765/score")                                   # here
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from openrft.models.http import BadRequest, JSONHandler, JSONServer, Rejected, RequestFailed, RetryingClient
from openrft.rewards.prm.base import ProcessScorer
from openrft.rewards.prm.protocol import parse_scores, score_in_requests

__all__ = ["RemoteScorer", "RemoteScorerError", "ScorerServer", "make_scorer_server", "serve_scorer"]

logger = logging.getLogger(__name__)

class RemoteScorerError(RequestFailed):
    """A scoring request failed for good; ``url`` and ``status`` (None without a response) say where and how."""


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
        self.batch_size = batch_size
        self._http = RetryingClient(timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s,
                                    max_backoff_s=max_backoff_s, headers=headers, error=RemoteScorerError,
                                    hint="Check that the scorer server is up at this URL, or raise max_retries / "
                                         "timeout_s.")

    @property
    def requests(self) -> int:
        """HTTP attempts made so far (retries included)."""
        return self._http.requests

    @property
    def timeout_s(self) -> float:
        return self._http.timeout_s

    @property
    def max_retries(self) -> int:
        return self._http.max_retries

    def __repr__(self) -> str:
        return f"RemoteScorer({self.url!r})"

    @classmethod
    def from_pretrained(cls, path: str, device=None, dtype=None, batch_size: int = 64, **kwargs) -> "RemoteScorer":
        """Same signature as the local scorers; ``path`` is the URL and ``device``/``dtype`` are ignored."""
        return cls(path, batch_size=batch_size, **kwargs)

    def close(self) -> None:
        self._http.close()

    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        return score_in_requests(questions, steps, self.batch_size, self._post)

    def _post(self, body: dict, sent_steps: list[list[str]]) -> list[list[float]]:
        try:
            return self._http.post_json(self.url, body, lambda data: parse_scores(data, sent_steps, self.url),
                                        retry_malformed=False)
        except Rejected as err:
            raise RemoteScorerError(f"POST {self.url} was rejected with status {err.status}: {err.message}",
                                    url=self.url, status=err.status, last_error=err.message, attempts=1) from None


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


class ScorerServer(JSONServer):
    """Serves the scoring protocol with one scorer: ``POST`` (any path) scores, ``GET`` (any path) answers
    ``{"ok": true, "scorer": name}``. Calls into the scorer are serialised (one model, one forward at a time)."""

    thread_name = "prm-server"

    def __init__(self, scorer: ProcessScorer, host: str = "127.0.0.1", port: int = 8765):
        self.scorer = scorer
        self.lock = threading.Lock()
        super().__init__((host, port), _ScorerHandler)


class _ScorerHandler(JSONHandler):
    server: ScorerServer

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self.send_json(200, {"ok": True, "scorer": getattr(self.server.scorer, "name", type(self.server.scorer).__name__)})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        try:
            questions, steps = _parse_items(self.read_json())
        except BadRequest as err:
            self.send_json(err.status, {"error": f"bad request: {err}"})
            return
        except ValueError as err:
            self.send_json(400, {"error": f"bad request: {err}"})
            return
        try:
            with self.server.lock:
                scores = self.server.scorer.score_batch(questions, steps)
        except Exception as err:  # noqa: BLE001 - reported to the client as a server error
            logger.exception("scorer failed")
            self.send_json(500, {"error": f"{type(err).__name__}: {err}"})
            return
        if any(not math.isfinite(x) for sc in scores for x in sc):
            self.send_json(500, {"error": "the scorer produced a non-finite score"})
            return
        self.send_json(200, {"scores": scores})


def make_scorer_server(scorer: ProcessScorer, host: str = "127.0.0.1", port: int = 8765) -> ScorerServer:
    """A :class:`ScorerServer` for ``scorer`` bound to ``host:port`` (0: any free port), not yet serving."""
    return ScorerServer(scorer, host, port)


def serve_scorer(scorer: ProcessScorer, host: str = "127.0.0.1", port: int = 8765,
                 block: bool = True) -> ScorerServer:
    """Serve ``scorer`` over HTTP. ``block=False`` starts it in a daemon thread and returns the server
    (``server.url`` + ``/score`` is the endpoint; ``server.stop()`` ends it)."""
    server = make_scorer_server(scorer, host, port)
    if block:
        logger.info("serving %s at %s/score", getattr(scorer, "name", "scorer"), server.url)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    else:
        server.start()
    return server
