"""An OpenAI-compatible HTTP server over any :class:`Generator` (``openrft serve``).

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /health``. Responses follow the OpenAI layout; invalid requests get a 400 with an
``{"error": {"message", "type", "param", "code"}}`` body naming the field at fault.

One thread per connection (:class:`~openrft.models.http.JSONServer`, the standard library's threaded
server with the JSON plumbing every openrft server shares) parses and validates requests; a
single batcher thread owns the generator. It takes every request waiting when the generator
frees up and merges those with equal sampling parameters into one ``generate`` call, so
concurrent clients share batches. Seeded sampling requests are run alone, so a request with
a seed gets the same samples however busy the server is (the transformers backend seeds each
sequence by its position in the batch).

In Python::

    server = make_server(generator, "my-model").start()    # a free port on 127.0.0.1
    client = OpenAIGenerator(server.url + "/v1", "my-model")
    ...
    server.stop()
"""

from __future__ import annotations

import argparse
import logging
import queue
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from openrft.models.backends.base import Completion, Generator, Prompt, SamplingParams
from openrft.models.http import BadRequest, JSONHandler, JSONServer

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_N = 128
ROLES = {"system", "user", "assistant", "tool", "developer"}


class RequestError(BadRequest):
    """A client error, sent back as an OpenAI error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message, status)
        self.message, self.param, self.type, self.code = message, param, type_, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# ------------------------------------------------------------------ validation
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _content(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for k, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise RequestError(f"only text content parts are supported; {param}[{k}] is not one", f"{param}[{k}]")
            parts.append(part["text"])
        return "".join(parts)
    raise RequestError(f"{param} must be a string or a list of text parts", param)


def parse_sampling(body: dict, default_max_tokens: int) -> SamplingParams:
    """Sampling parameters of a request body, validated field by field."""
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise RequestError(f"n must be an integer in [1, {MAX_N}], got {n!r}", "n")
    temperature = body.get("temperature")
    temperature = 1.0 if temperature is None else temperature
    if not _is_num(temperature) or temperature < 0:
        raise RequestError(f"temperature must be a number >= 0, got {temperature!r}", "temperature")
    top_p = body.get("top_p")
    top_p = 1.0 if top_p is None else top_p
    if not _is_num(top_p) or not 0 < top_p <= 1:
        raise RequestError(f"top_p must be a number in (0, 1], got {top_p!r}", "top_p")
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(name)
    max_tokens = default_max_tokens if max_tokens is None else max_tokens
    if not _is_int(max_tokens) or max_tokens < 1:
        raise RequestError(f"{name} must be an integer >= 1, got {max_tokens!r}", name)
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise RequestError(f"seed must be an integer or null, got {seed!r}", "seed")
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 16 or not all(isinstance(s, str) and s for s in stop):
        raise RequestError("stop must be a non-empty string or a list of at most 16 of them", "stop")
    if body.get("stream"):
        raise RequestError("streaming is not supported by this server; send stream=false", "stream")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise RequestError("logprobs are not supported by this server", "logprobs")
    if body.get("echo"):
        raise RequestError("echo is not supported by this server", "echo")
    if body.get("tools"):
        raise RequestError("tool calling is not supported by this server", "tools")
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise RequestError("best_of is not supported by this server (leave it unset or equal to n)", "best_of")
    return SamplingParams(n=n, temperature=float(temperature), top_p=float(top_p), max_new_tokens=max_tokens,
                          seed=seed, stop=tuple(stop))


def parse_chat_prompt(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError(f"messages[{i}] must be an object with role and content", f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise RequestError(f"messages[{i}].role must be one of {sorted(ROLES)}, got {role!r}",
                               f"messages[{i}].role")
        out.append({"role": "system" if role == "developer" else role,
                    "content": _content(m.get("content"), f"messages[{i}].content")})
    return out


def parse_completion_prompts(body: dict) -> list[str]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts):
        for i, p in enumerate(prompts):
            if not p:
                raise RequestError("prompts must not be empty strings", "prompt" if isinstance(prompt, str)
                                   else f"prompt[{i}]")
        return list(prompts)
    if isinstance(prompts, list) and prompts and all(_is_int(p) or isinstance(p, list) for p in prompts):
        raise RequestError("token-id prompts are not supported; send text", "prompt")
    raise RequestError("prompt must be a string or a non-empty list of strings", "prompt")


# --------------------------------------------------------------------- batcher
@dataclass(eq=False)
class _Job:
    prompts: list[Prompt]
    params: SamplingParams
    done: threading.Event = field(default_factory=threading.Event)
    result: list[list[Completion]] | None = None
    error: BaseException | None = None

    @property
    def alone(self) -> bool:  # seeded sampling: the batch position would change the samples
        return not self.params.greedy and self.params.seed is not None


class Batcher:
    """Owns the generator; merges waiting jobs with equal sampling parameters into one ``generate`` call."""

    def __init__(self, generator: Generator, max_batch_sequences: int = 256, wait_s: float = 0.002):
        self.generator = generator
        self.max_batch_sequences = max_batch_sequences
        self.wait_s = wait_s
        self.calls = 0  # generate calls made, for tests and logs
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openrft-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        if self._closed.is_set():
            raise RuntimeError("the server is shutting down")
        job = _Job(prompts, params)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            job.error = RuntimeError("the server is shutting down")
            job.done.set()

    def _take(self) -> list[_Job]:
        jobs = [self._queue.get(timeout=0.1)]
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return jobs

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        groups: list[list[_Job]] = []
        open_group: dict[SamplingParams, list[_Job]] = {}
        for job in jobs:
            size = len(job.prompts) * job.params.n
            group = open_group.get(job.params)
            if job.alone or group is None or \
                    sum(len(j.prompts) for j in group) * job.params.n + size > self.max_batch_sequences:
                group = [job]
                groups.append(group)
                if not job.alone:
                    open_group[job.params] = group
            else:
                group.append(job)
        return groups

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                jobs = self._take()
            except queue.Empty:
                continue
            for group in self._groups(jobs):
                self._run(group)

    def _run(self, group: list[_Job]) -> None:
        prompts = [p for job in group for p in job.prompts]
        try:
            self.calls += 1
            out = self.generator.generate(prompts, group[0].params)
        except Exception as err:  # noqa: BLE001 - handed to the waiting request
            if len(group) > 1:  # find out whose request failed
                for job in group:
                    self._run([job])
                return
            group[0].error = err
            group[0].done.set()
            return
        start = 0
        for job in group:
            job.result = out[start: start + len(job.prompts)]
            start += len(job.prompts)
            job.done.set()


# ---------------------------------------------------------------------- server
class OpenAIServer(JSONServer):
    """A threaded server over a generator; ``start()`` runs it in a thread, ``stop()`` ends it. OpenAI clients take
    ``url + "/v1"`` as their base URL."""

    thread_name = "openrft-serve"

    def __init__(self, generator: Generator, model_name: str, host: str = "127.0.0.1", port: int = 0,
                 default_max_tokens: int = 512, max_batch_sequences: int = 256):
        self.generator = generator
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        super().__init__((host, port), _Handler)
        self.batcher = Batcher(generator, max_batch_sequences=max_batch_sequences)

    def server_close(self) -> None:
        super().server_close()
        if hasattr(self, "batcher"):  # absent when binding failed in __init__
            self.batcher.close()

    def count_prompt_tokens(self, prompt: Prompt) -> int:
        tokenizer = getattr(self.generator, "tokenizer", None)
        if tokenizer is not None:
            try:
                from openrft.models.backends.hf import render_prompt

                return len(render_prompt(tokenizer, prompt))
            except Exception:  # noqa: BLE001 - usage is informative; fall back to an estimate
                pass
        text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
        return max(1, len(text) // 4)

    def check_model(self, body: dict) -> None:
        model = body.get("model")
        if model is not None and model != self.model_name:
            raise RequestError(f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                               "model", status=404, type_="not_found_error", code="model_not_found")

    def complete(self, body: dict, chat: bool) -> dict:
        self.check_model(body)
        prompts: list[Prompt] = [parse_chat_prompt(body)] if chat else parse_completion_prompts(body)
        params = parse_sampling(body, self.default_max_tokens)
        try:
            outputs = self.batcher.submit(prompts, params)
        except ValueError as err:  # e.g. a prompt longer than the model's context
            raise RequestError(str(err), "messages" if chat else "prompt") from err
        choices = []
        for i, comps in enumerate(outputs):
            for j, c in enumerate(comps):
                choice: dict[str, Any] = {"index": i * params.n + j}
                if chat:
                    choice["message"] = {"role": "assistant", "content": c.text}
                else:
                    choice["text"] = c.text
                choice["logprobs"] = None
                choice["finish_reason"] = c.finish_reason
                choices.append(choice)
        prompt_tokens = sum(self.count_prompt_tokens(p) for p in prompts)
        completion_tokens = sum(c.num_tokens for comps in outputs for c in comps)
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def models(self) -> dict:
        return {"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "openrft"}]}


class _Handler(JSONHandler):
    server: OpenAIServer
    max_body_bytes = MAX_BODY_BYTES

    def _error(self, err: RequestError) -> None:
        self.send_json(err.status, err.body())

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        path = self.route
        if path == "/health":
            self.send_json(200, {"status": "ok"})
        elif path == "/v1/models":
            self.send_json(200, self.server.models())
        elif path in ("/v1/chat/completions", "/v1/completions"):
            self._error(RequestError(f"use POST for {path}", status=405))
        else:
            self._error(RequestError(f"no such endpoint: GET {path}", status=404, type_="not_found_error"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = self.route
        try:
            if path not in ("/v1/chat/completions", "/v1/completions"):
                raise RequestError(f"no such endpoint: POST {path}; use /v1/chat/completions or /v1/completions",
                                   status=404, type_="not_found_error")
            try:
                body = self.read_json()
            except BadRequest as err:  # the body itself: an OpenAI error body with the same status
                raise RequestError(str(err), status=err.status) from None
            self.send_json(200, self.server.complete(body, chat=path == "/v1/chat/completions"))
        except RequestError as err:
            self._error(err)
        except Exception as err:  # noqa: BLE001 - reported to the client as a 500
            logger.exception("generation failed")
            self._error(RequestError(f"generation failed: {type(err).__name__}: {err}", status=500,
                                     type_="server_error"))


def make_server(generator: Generator, model_name: str, host: str = "127.0.0.1", port: int = 0,
                **kwargs: Any) -> OpenAIServer:
    """A server for ``generator`` bound to ``host:port`` (0: a free port), not yet serving.

    Call ``.start()`` to serve in a background thread (``.stop()`` to end), or ``.serve_forever()``.
    """
    return OpenAIServer(generator, model_name, host=host, port=port, **kwargs)


# ------------------------------------------------------------------------- CLI
def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="openrft serve",
        description="Serve a model through an OpenAI-compatible HTTP API: /v1/chat/completions, "
                    "/v1/completions, /v1/models, /health.")
    parser.add_argument("--model", default="smollm2-135m",
                        help="local checkpoint directory, hub id (offline: from the local cache) or bundled name")
    parser.add_argument("--served-model-name", default=None, help="name clients send as 'model' (default: --model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it to the network")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (0: any free port)")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--batch-size", type=int, default=32, help="most sequences the model decodes at once")
    parser.add_argument("--default-max-tokens", type=int, default=512,
                        help="max_tokens for requests that do not set it")
    return parser


def server_from_args(args: argparse.Namespace) -> OpenAIServer:
    """Load the model named by parsed ``args`` and bind the server (not yet serving)."""
    from openrft.models.backends.hf import TransformersGenerator

    generator = TransformersGenerator.from_pretrained(args.model, dtype=args.dtype, device=args.device,
                                                      batch_size=args.batch_size)
    return make_server(generator, args.served_model_name or args.model, host=args.host, port=args.port,
                       default_max_tokens=args.default_max_tokens)


def main(argv: Sequence[str] | None = None) -> int:
    """``openrft serve --model PATH_OR_NAME --port 8000``: serve a model until Ctrl-C."""
    args = build_parser().parse_args(argv)
    try:
        server = server_from_args(args)
    except FileNotFoundError as err:
        print(f"openrft serve: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # port in use, permission denied
        print(f"openrft serve: cannot listen on {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    print(f"openrft serve: {server.model_name!r} at {server.url}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
