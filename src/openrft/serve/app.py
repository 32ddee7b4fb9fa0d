"""The ASGI application of ``openrft serve`` (Starlette): routes, auth, bounded bodies, one job per request.

A completion request is validated, its prompts tokenized and its tokens counted (:class:`~.protocol.Limits`)
off the event loop, then handed to the scheduler thread as a :class:`~.jobs.Job`; :class:`JobResponse` turns
the job's events into one JSON body or a server-sent event stream. While it waits, it listens for the client
going away and then cancels the job, so the scheduler stops generating for it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from openrft.models.backends.base import Generator, Prompt
from openrft.models.backends.hf import TransformersGenerator, render_prompt
from openrft.serve.jobs import SHUTTING_DOWN, Batcher, Done, Failed, Job, Tokens
from openrft.serve.protocol import InFlight, Limits, ParsedRequest, RequestError, parse_request, request_tokens
from openrft.serve.responses import Finished, Reply, TextStream, TokenTexts, sse
from openrft.serve.scheduler import EngineScheduler

logger = logging.getLogger(__name__)


@dataclass
class ServeState:
    """What the endpoints share: the generator and its scheduler, the limits, the API key."""

    generator: Generator
    model_name: str
    scheduler: EngineScheduler | Batcher
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    default_max_tokens: int = 512
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.engine = isinstance(self.generator, TransformersGenerator)
        self.in_flight = InFlight(self.limits)
        self.texts = TokenTexts(self.generator.tokenizer) if self.engine else None

    def authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError("missing API key: send it as 'Authorization: Bearer KEY'", status=401,
                               code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise RequestError("incorrect API key provided", status=401, code="invalid_api_key",
                               headers={"WWW-Authenticate": "Bearer"})

    def model_card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "openrft"}

    def check_model(self, model: Any) -> None:
        if model is not None and model != self.model_name:
            raise RequestError(f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                               "model", status=404, type_="not_found_error", code="model_not_found")

    def measure(self, req: ParsedRequest) -> tuple[list[list[int]] | None, list[int], int]:
        """``(token ids or None, prompt lengths, tokens the request may hold)``; 400 for a prompt the model
        cannot take or a request over the per-request token limit. Runs off the event loop (tokenizing)."""
        if self.engine:
            try:
                encoded = self.generator.encode(req.prompts)
            except ValueError as err:
                raise RequestError(str(err), "messages" if req.chat else "prompt") from None
            lengths = [len(ids) for ids in encoded]
            return encoded, lengths, request_tokens(lengths, req.params, self.generator.max_positions, self.limits)
        lengths = [self._count_tokens(p) for p in req.prompts]
        return None, lengths, request_tokens(lengths, req.params, None, self.limits)

    def _count_tokens(self, prompt: Prompt) -> int:
        tokenizer = getattr(self.generator, "tokenizer", None)
        if tokenizer is not None:
            return len(render_prompt(tokenizer, prompt))
        text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
        return max(1, len(text) // 4)


async def read_json(request: Request, limit: int) -> dict:
    """The request's JSON object body, read up to ``limit`` bytes (413 beyond, 400 for anything but an object)."""
    too_big = RequestError(f"request body over {limit} bytes, this server's limit (--max-body-bytes)", status=413)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
    except ClientDisconnect:  # nobody to answer
        raise RequestError("the client disconnected while sending the request body") from None
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as err:
        raise RequestError(f"request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    return body


def _failure(err: BaseException, chat: bool) -> RequestError:
    if isinstance(err, ValueError):  # e.g. a plain generator refusing a prompt longer than its context
        return RequestError(str(err), "messages" if chat else "prompt")
    if isinstance(err, RuntimeError) and str(err) == SHUTTING_DOWN:
        return RequestError(SHUTTING_DOWN, status=503, type_="server_error")
    return RequestError(f"generation failed: {type(err).__name__}: {err}", status=500, type_="server_error")


def error_response(err: RequestError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class JobResponse:
    """An ASGI response serving a submitted job: one JSON body, or a stream of chunks; it cancels the job if the
    client leaves, and releases the job's share of the in-flight limits when done."""

    def __init__(self, state: ServeState, req: ParsedRequest, job: Job, prompt_tokens: int,
                 release: Callable[[], None]):
        self.state, self.req, self.job, self.prompt_tokens, self.release = state, req, job, prompt_tokens, release
        self.reply = Reply(req, state.model_name, state.texts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        work = asyncio.ensure_future(self._stream(send) if self.req.stream else self._whole(scope, receive, send))
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                work.result()
            else:
                logger.debug("client left; cancelling %s", self.reply.id)
        finally:
            work.cancel()
            gone.cancel()
            self.job.cancel()
            self.release()

    async def _whole(self, scope: Scope, receive: Receive, send: Send) -> None:
        done: dict[int, Finished] = {}
        while len(done) < self.job.choices:
            event = await self.job.events.get()
            if isinstance(event, Failed):
                await error_response(_failure(event.error, self.req.chat))(scope, receive, send)
                return
            if isinstance(event, Done):
                done[event.choice] = (event.completion, event.logprobs)
        await JSONResponse(self.reply.body(done, self.prompt_tokens))(scope, receive, send)

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]})

        async def write(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode("utf-8"), "more_body": True})

        reply, stops = self.reply, self.req.params.stop
        tokenizer = self.state.generator.tokenizer if self.state.engine else None
        streams = [TextStream(tokenizer, stops) for _ in range(self.job.choices)]
        if self.req.chat:
            for i in range(self.job.choices):
                await write(reply.chunk(i, role=True))
        left, completion_tokens, failed = self.job.choices, 0, False
        while left and not failed:
            event = await self.job.events.get()
            if isinstance(event, Failed):
                await write(sse(_failure(event.error, self.req.chat).body()))
                failed = True
            elif isinstance(event, Tokens):
                stream = streams[event.choice]
                offset = len(stream.sent)
                delta = stream.push(event.token_ids)
                if delta or event.logprobs:
                    await write(reply.chunk(event.choice, delta, token_ids=event.token_ids, logprobs=event.logprobs,
                                            offset=offset))
            else:
                rest = streams[event.choice].finish(event.completion.text)
                if rest:
                    await write(reply.chunk(event.choice, rest))
                await write(reply.chunk(event.choice, None if self.req.chat else "",
                                        finish=event.completion.finish_reason))
                completion_tokens += event.completion.num_tokens
                left -= 1
        if self.req.include_usage and not failed:
            await write(reply.usage_chunk(self.prompt_tokens, completion_tokens))
        await write(sse("[DONE]"))
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _disconnected(receive: Receive) -> None:
    """Returns when the client disconnects (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


# --------------------------------------------------------------------- routes
def _state(request: Request) -> ServeState:
    return request.app.state.serve


async def _complete(request: Request, chat: bool) -> JobResponse:
    state = _state(request)
    state.authorize(request)
    body = await read_json(request, state.limits.max_body_bytes)
    state.check_model(body.get("model"))
    req = parse_request(body, chat, state.default_max_tokens, state.limits)
    if req.top_logprobs is not None and not state.engine:
        raise RequestError("logprobs need a local transformers model behind this server", "logprobs")
    encoded, lengths, tokens = await asyncio.to_thread(state.measure, req)
    state.in_flight.reserve(len(req.prompts), tokens)
    job = Job(req.prompts, req.params, asyncio.get_running_loop(), encoded=encoded, top_logprobs=req.top_logprobs,
              stream=req.stream)
    try:
        state.scheduler.submit(job)
    except RuntimeError:
        state.in_flight.release(len(req.prompts), tokens)
        raise RequestError(SHUTTING_DOWN, status=503, type_="server_error") from None
    return JobResponse(state, req, job, sum(lengths), lambda: state.in_flight.release(len(req.prompts), tokens))


async def chat_completions(request: Request) -> JobResponse:
    return await _complete(request, chat=True)


async def completions(request: Request) -> JobResponse:
    return await _complete(request, chat=False)


async def list_models(request: Request) -> Response:
    _state(request).authorize(request)
    return JSONResponse({"object": "list", "data": [_state(request).model_card()]})


async def retrieve_model(request: Request) -> Response:
    state = _state(request)
    state.authorize(request)
    state.check_model(request.path_params["model"])
    return JSONResponse(state.model_card())


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        err = RequestError(f"no such endpoint: {where}; this server has /v1/chat/completions, /v1/completions, "
                           "/v1/models and /health", status=404, type_="not_found_error")
    elif exc.status_code == 405:
        err = RequestError(f"method not allowed: {where} (allowed: {(exc.headers or {}).get('Allow', '?')})",
                           status=405, headers=dict(exc.headers or {}))
    else:
        err = RequestError(str(exc.detail), status=exc.status_code)
    return error_response(err)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("request failed", exc_info=exc)
    return error_response(RequestError(f"internal error: {type(exc).__name__}: {exc}", status=500,
                                       type_="server_error"))


def create_app(state: ServeState) -> Starlette:
    """The Starlette application over ``state``."""
    app = Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ], exception_handlers={RequestError: _request_error, HTTPException: _http_error,
                           Exception: _server_error})
    app.state.serve = state
    return app
