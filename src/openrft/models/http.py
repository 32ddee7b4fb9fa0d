"""One retrying JSON-over-HTTP client and one threaded JSON server, for every HTTP peer openrft talks to.

Client (:class:`RetryingClient`, one ``httpx.Client``): connection errors, timeouts and 408/429/5xx replies are
retried with exponential backoff and jitter, honouring ``retry-after-ms`` and ``Retry-After`` (seconds or an HTTP
date) up to :data:`MAX_RETRY_AFTER_S`; a malformed 2xx body is retried too where the caller says so. Any other
4xx raises :class:`Rejected` at once with the server's message. After the last retry the caller's error class
(a :class:`RequestFailed`) names the URL, the last status and the last error. Used by the OpenAI-compatible
generator (:mod:`openrft.models.backends.openai_http`) and the remote PRM (:mod:`openrft.rewards.prm.remote`).

Server (:class:`JSONServer` + :class:`JSONHandler`, the standard library's threaded server): JSON bodies in and
out, ``Content-Length`` required and capped, keep-alive connections closed on stop, background ``start()``.
Used by the PRM scorer server (``openrft serve`` runs on Starlette and uvicorn instead: :mod:`openrft.serve`).
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import httpx

__all__ = ["MAX_RETRY_AFTER_S", "RETRY_STATUSES", "Aborted", "BadRequest", "JSONHandler", "JSONServer", "Rejected",
           "RequestFailed", "RetryingClient", "retry_after", "server_message"]

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429})  # and every 5xx
MAX_RETRY_AFTER_S = 300.0
T = TypeVar("T")


class RequestFailed(RuntimeError):
    """A request failed for good: ``url``, ``status`` (None without a response), ``last_error``, ``attempts``."""

    def __init__(self, message: str, *, url: str, status: int | None = None, last_error: str = "",
                 attempts: int = 0):
        super().__init__(message)
        self.url = url
        self.status = status
        self.last_error = last_error
        self.attempts = attempts


class Rejected(Exception):
    """A 4xx other than 408/429: the request itself is wrong, retrying will not help."""

    def __init__(self, url: str, status: int, message: str):
        super().__init__(message)
        self.url, self.status, self.message = url, status, message


class Aborted(Exception):
    """The caller's stop event was set (another request failed for good): this one gives up."""


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def server_message(resp: httpx.Response) -> str:
    """The error message of a response: OpenAI ``{"error": {"message"}}``, ``{"error": str}``, FastAPI
    ``{"detail"}``, ``{"message"}``, or the raw text (at most 2,000 characters)."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:2000]
        for value in (err, data.get("detail"), data.get("message")):
            if value:
                return str(value)[:2000]
    return (resp.text or resp.reason_phrase or "")[:2000]


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds the server asks to wait: ``retry-after-ms``, else ``Retry-After`` in seconds or as an HTTP date."""
    if (ms := resp.headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class RetryingClient:
    """POST JSON, parse the reply, retry what a retry can fix (see the module docstring).

    Args:
        timeout_s: per-request timeout (connect at most 10 s).
        max_retries: retries after the first attempt.
        backoff_s: first retry delay; doubles per retry, with jitter, capped at ``max_backoff_s``.
        headers: sent with every request (``User-Agent: openrft`` unless given).
        concurrency: connections kept open (requests from that many threads at once).
        error: the :class:`RequestFailed` subclass raised when a request fails for good.
        hint: appended to that error's message (what the user can do).
    """

    def __init__(self, *, timeout_s: float = 60.0, max_retries: int = 5, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, headers: Mapping[str, str] | None = None, concurrency: int = 1,
                 error: type[RequestFailed] = RequestFailed, hint: str = ""):
        if timeout_s <= 0 or max_retries < 0 or concurrency < 1:
            raise ValueError("need timeout_s > 0, max_retries >= 0, concurrency >= 1")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.error = error
        self.hint = hint
        self.requests = 0  # HTTP attempts made (tests, logs)
        self._client = httpx.Client(
            headers={"User-Agent": "openrft", **dict(headers or {})},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))

    def close(self) -> None:
        self._client.close()

    def post_json(self, url: str, body: Any, parse: Callable[[Any], T], *, retry_malformed: bool = True,
                  stop: threading.Event | None = None) -> T:
        """``parse(reply JSON)``. ``parse`` raises ``ValueError`` on a malformed reply: retried when
        ``retry_malformed``, else the request fails at once. ``stop`` set: :class:`Aborted`."""
        last: _Retryable | None = None
        for attempt in range(self.max_retries + 1):
            if stop is not None and stop.is_set():
                raise Aborted
            try:
                return self._attempt(url, body, parse, retry_malformed)
            except _Retryable as err:
                last = err
            if attempt == self.max_retries:
                break
            delay = min(self.max_backoff_s, self.backoff_s * 2**attempt)
            delay = delay / 2 + random.uniform(0, delay / 2)
            if last.retry_after is not None:
                delay = max(delay, min(last.retry_after, MAX_RETRY_AFTER_S))
            logger.warning("POST %s failed (%s); retry %d/%d in %.2fs", url, last, attempt + 1, self.max_retries,
                           delay)
            if stop is not None:
                if stop.wait(delay):
                    raise Aborted
            else:
                time.sleep(delay)
        assert last is not None
        status = f"status {last.status}" if last.status is not None else "no response"
        raise self.error(f"POST {url} failed after {self.max_retries + 1} attempts ({status}): {last}."
                         + (f" {self.hint}" if self.hint else ""),
                         url=url, status=last.status, last_error=str(last), attempts=self.max_retries + 1)

    def _attempt(self, url: str, body: Any, parse: Callable[[Any], T], retry_malformed: bool) -> T:
        self.requests += 1
        try:
            resp = self._client.post(url, json=body)
        except httpx.TimeoutException as err:
            raise _Retryable(f"timed out after {self.timeout_s}s ({type(err).__name__})") from None
        except httpx.TransportError as err:
            raise _Retryable(f"{type(err).__name__}: {err}") from None
        status = resp.status_code
        if status in RETRY_STATUSES or status >= 500:
            raise _Retryable(server_message(resp) or resp.reason_phrase, status, retry_after(resp))
        if not 200 <= status < 300:
            raise Rejected(url, status, server_message(resp))
        try:
            return parse(resp.json())
        except ValueError as err:  # includes JSON and UTF-8 decoding errors
            snippet = resp.text[:200].replace("\n", " ")
            if retry_malformed:
                raise _Retryable(f"malformed response body ({err}): {snippet!r}", status) from None
            raise self.error(f"malformed reply from {url}: {err}; body starts {snippet!r}", url=url, status=status,
                             last_error=str(err), attempts=1) from None


# ---------------------------------------------------------------------------- server side
class BadRequest(Exception):
    """What a handler answers with ``status`` (400 unless said) and ``message``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class JSONHandler(BaseHTTPRequestHandler):
    """Request handler with JSON in and out; subclasses write ``do_GET``/``do_POST``."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    timeout = 300  # idle keep-alive connections are closed after this many seconds
    server_version = "openrft"
    max_body_bytes = 32 << 20

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("%s " + format, self.address_string(), *args)

    @property
    def route(self) -> str:
        """The request path without the query string or a trailing slash."""
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> dict:
        """The request's JSON object body; :class:`BadRequest` (411 without ``Content-Length``, 413 over
        :attr:`max_body_bytes`, 400 for anything but a JSON object)."""
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise BadRequest("a Content-Length header is required", status=411)
        if int(length) > self.max_body_bytes:
            self.close_connection = True
            raise BadRequest(f"request body over {self.max_body_bytes} bytes", status=413)
        raw = self.rfile.read(int(length))
        try:
            body = json.loads(raw)
        except ValueError as err:
            raise BadRequest(f"request body is not valid JSON: {err}") from None
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body


class JSONServer(ThreadingHTTPServer):
    """A threaded server that ``start()`` runs in the background and ``stop()`` ends, open connections included."""

    daemon_threads = True
    allow_reuse_address = True
    thread_name = "openrft-http"

    def __init__(self, address: tuple[str, int], handler: type[JSONHandler]):
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        super().__init__(address, handler)

    @property
    def host(self) -> str:
        return self.server_address[0]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown`, or, in the main thread, until Ctrl-C (``KeyboardInterrupt``): SIGINT gets
        Python's default handler back, which a process started with SIGINT ignored (a script's background job
        inherits that) would otherwise lack, and the server would ignore Ctrl-C and ``kill -INT``."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        super().serve_forever(poll_interval)

    def start(self) -> "JSONServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the listening socket and every open connection."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        self.server_close()

    def server_close(self) -> None:
        super().server_close()
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def process_request(self, request, client_address) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def __enter__(self) -> "JSONServer":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
