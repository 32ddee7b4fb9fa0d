"""The remote process scorer for exported rewards: the scoring protocol over ``urllib``, so it runs where only the
standard library is (an engine's Python, with no openrft and no httpx installed).

Speaks :mod:`openrft.rewards.prm.protocol` to ``openrft prm serve`` (or any server of that protocol).
Connection errors, timeouts and 408/429/5xx replies are retried with exponential backoff and jitter
(``Retry-After`` in seconds honoured, up to 300 s); another 4xx, or a 200 that is not a well-formed
reply, fails at once. After the last retry, :class:`PRMClientError` names the URL, the last status and
the last error.
"""

from __future__ import annotations

import json
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from openrft.rewards.prm.base import ProcessScorer
from openrft.rewards.prm.protocol import parse_scores, score_in_requests

__all__ = ["PRMClient", "PRMClientError"]

logger = logging.getLogger(__name__)

_RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
_MAX_RETRY_AFTER_S = 300.0


class PRMClientError(RuntimeError):
    """A scoring request failed for good: ``url``, ``status`` (None without a response) and ``last_error``."""

    def __init__(self, message: str, *, url: str, status: int | None = None, last_error: str = ""):
        super().__init__(message)
        self.url, self.status, self.last_error = url, status, last_error


class _Retry(Exception):
    def __init__(self, message: str, status: int | None = None, wait_s: float | None = None):
        super().__init__(message)
        self.status, self.wait_s = status, wait_s


def _message(body: bytes) -> str:
    """The server's error message: ``{"error": ...}`` or the raw text, at most 500 characters."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text[:500]
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        err = err.get("message")
    return str(err or text)[:500]


class PRMClient(ProcessScorer):
    """Process scorer behind an HTTP endpoint, standard library only (see the module docstring).

    Args:
        url: the endpoint, e.g. ``http://gpu-box:8765/score``.
        timeout_s: per-request timeout in seconds.
        max_retries: retries after the first attempt for retryable failures.
        backoff_s: first retry delay; doubles per retry with jitter, capped at ``max_backoff_s``.
        batch_size: items per request.
    """

    name = "remote"

    def __init__(self, url: str, timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, batch_size: int = 64):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"remote scorer URL must be http(s)://host[:port]/path, got {url!r}")
        if timeout_s <= 0 or max_retries < 0 or batch_size < 1:
            raise ValueError("need timeout_s > 0, max_retries >= 0, batch_size >= 1")
        self.url = url
        self.timeout_s, self.max_retries, self.batch_size = timeout_s, max_retries, batch_size
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s

    def __repr__(self) -> str:
        return f"PRMClient({self.url!r})"

    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        return score_in_requests(questions, steps, self.batch_size, self._post)

    def _post(self, body: dict[str, Any], sent: list[list[str]]) -> list[list[float]]:
        data = json.dumps(body).encode("utf-8")
        last = _Retry("no attempt made")
        for attempt in range(self.max_retries + 1):
            try:
                reply = self._attempt(data)
            except _Retry as err:
                last = err
            else:
                try:
                    return parse_scores(reply, sent, self.url)
                except ValueError as err:
                    raise PRMClientError(f"malformed reply from {self.url}: {err}", url=self.url, status=200,
                                         last_error=str(err)) from None
            if attempt < self.max_retries:
                delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
                delay = delay / 2 + random.uniform(0, delay / 2)
                if last.wait_s is not None:
                    delay = max(delay, min(last.wait_s, _MAX_RETRY_AFTER_S))
                logger.warning("POST %s failed (%s); retry %d/%d in %.2fs", self.url, last, attempt + 1,
                               self.max_retries, delay)
                time.sleep(delay)
        status = f"status {last.status}" if last.status is not None else "no response"
        raise PRMClientError(f"POST {self.url} failed after {self.max_retries + 1} attempts ({status}): {last}. "
                             f"Check that the scorer server ('openrft prm serve') is up at this URL and reachable "
                             "from the scoring nodes", url=self.url, status=last.status, last_error=str(last))

    def _attempt(self, data: bytes) -> Any:
        request = urllib.request.Request(self.url, data=data, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "openrft-export"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as err:
            message = _message(err.read())
            if err.code in _RETRY_STATUSES or err.code >= 500:
                wait = err.headers.get("Retry-After") if err.headers else None
                raise _Retry(message or err.reason, err.code,
                             float(wait) if wait and wait.strip().replace(".", "", 1).isdigit() else None) from None
            raise PRMClientError(f"POST {self.url} was rejected with status {err.code}: {message}", url=self.url,
                                 status=err.code, last_error=message) from None
        except (urllib.error.URLError, OSError) as err:  # refused, reset, timed out (TimeoutError is an OSError)
            reason = getattr(err, "reason", err)
            raise _Retry(f"{type(reason).__name__}: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError as err:
            raise PRMClientError(f"malformed reply from {self.url}: {err}; body starts {raw[:200]!r}",
                                 url=self.url, status=200, last_error=str(err)) from None
