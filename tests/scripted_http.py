"""A scripted OpenAI-compatible server that misbehaves on purpose (garbage, 500, 429, slow replies, ignored ``n``),
for the HTTP client's tests and the commands that generate through it. It counts the requests in flight at once.

Use the ``scripted`` fixture (``from scripted_http import scripted``): ``script, url = scripted(actions)``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Script:
    """What the fake server does per request: ``actions`` are consumed in order, then every request is ``ok``."""

    def __init__(self, actions=(), per_request=None):
        self.actions = list(actions)
        self.per_request = per_request  # fn(body) -> action, overrides the list
        self.requests: list[tuple[str, dict, dict]] = []
        self.lock = threading.Lock()
        self.in_flight = self.most_in_flight = 0  # requests being answered now / at most at once


def _echo_choices(path: str, body: dict, n: int) -> dict:
    prompt = body["prompt"] if "prompt" in body else body["messages"][-1]["content"]
    texts = [f"{prompt}|seed={body.get('seed')}|{i}" for i in range(n)]
    if path.endswith("/chat/completions"):
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}
                   for i, t in enumerate(texts)]
    else:
        choices = [{"index": i, "text": t, "finish_reason": "length"} for i, t in enumerate(texts)]
    return {"choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 2 * n, "total_tokens": 2 * n + 1}}


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, status: int, payload, headers=None):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802
        script: Script = self.server.script
        with script.lock:
            script.in_flight += 1
            script.most_in_flight = max(script.most_in_flight, script.in_flight)
        try:
            self._answer(script)
        finally:
            with script.lock:
                script.in_flight -= 1

    def _answer(self, script: Script):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with script.lock:
            script.requests.append((self.path, dict(self.headers), body))
            if script.per_request is not None:
                action = script.per_request(body)
            else:
                action = script.actions.pop(0) if script.actions else "ok"
        n = body.get("n", 1)
        if isinstance(action, tuple) and action[0] == "sleep":
            time.sleep(action[1])
            action = "ok"
        if action == "ok":
            self._reply(200, _echo_choices(self.path, body, n))
        elif action == "one_choice":
            self._reply(200, _echo_choices(self.path, body, 1))
        elif action == "reject_n":
            if n > 1:
                self._reply(400, {"error": {"message": "n > 1 is not supported", "type": "invalid_request_error"}})
            else:
                self._reply(200, _echo_choices(self.path, body, 1))
        elif action == "garbage":
            self._reply(200, b"<html>not json{")
        elif action == "no_choices":
            self._reply(200, {"object": "chat.completion", "choices": []})
        elif action == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:  # (status, payload[, headers])
            self._reply(*action)


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that timed out closed the socket: expected
        pass


@pytest.fixture
def scripted():
    servers = []

    def start(actions=(), per_request=None) -> tuple[Script, str]:
        srv = ScriptedServer(("127.0.0.1", 0), ScriptedHandler)
        srv.script = Script(actions, per_request)
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(srv)
        return srv.script, f"http://127.0.0.1:{srv.server_address[1]}/v1"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def client(url, model="m", **kw):
    """The openrft HTTP client with test-sized retries and timeouts."""
    from openrft.models.backends.openai_http import OpenAIGenerator

    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("max_retries", 3)
    kw.setdefault("timeout_s", 5)
    return OpenAIGenerator(url, model, **kw)
