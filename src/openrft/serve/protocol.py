"""The OpenAI request side of ``openrft serve``: validated request bodies, the server's limits, error bodies.

Every refusal is a :class:`RequestError`: an OpenAI ``{"error": {"message", "type", "param", "code"}}`` body
whose message names the field at fault, or the limit and the flag that sets it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, fields
from typing import Any

from openrft.models.backends.base import Prompt, SamplingParams

MAX_N = 128
MAX_TOP_LOGPROBS = 20
MAX_STOPS = 16
ROLES = {"system", "user", "assistant", "tool", "developer"}


class RequestError(Exception):
    """A refusal, sent back with ``status`` and an OpenAI error body (``headers`` added to the response)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 type_: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.type, self.code = message, param, status, type_, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _flag(name: str, help_: str) -> Any:
    return {"flag": name, "help": help_}


@dataclass(frozen=True)
class Limits:
    """What one request, and all requests in flight together, may ask for. A request's tokens are the KV-cache
    positions it may hold: for each prompt, ``n * (prompt tokens + max_tokens)``, max_tokens clamped to what
    the model's context leaves. Each field is a flag of ``openrft serve``."""

    max_body_bytes: int = field(default=8 << 20, metadata=_flag(
        "--max-body-bytes", "largest request body accepted (413 beyond)"))
    max_prompts_per_request: int = field(default=64, metadata=_flag(
        "--max-prompts-per-request", "most prompts in one /v1/completions request (400 beyond)"))
    max_tokens_per_request: int = field(default=1 << 20, metadata=_flag(
        "--max-tokens-per-request", "most tokens one request may hold: n * (prompt + max_tokens) over its "
                                    "prompts (400 beyond)"))
    max_prompts_in_flight: int = field(default=1024, metadata=_flag(
        "--max-prompts-in-flight", "most prompts of all requests being served at once (429 beyond)"))
    max_tokens_in_flight: int = field(default=1 << 23, metadata=_flag(
        "--max-tokens-in-flight", "most tokens of all requests being served at once (429 beyond)"))

    def __post_init__(self) -> None:
        flag = {f.name: f.metadata["flag"] for f in fields(self)}
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag[name]} must be a positive integer, got {value!r}")
        for what in ("prompts", "tokens"):  # else a lone request could be refused forever
            if getattr(self, f"max_{what}_in_flight") < getattr(self, f"max_{what}_per_request"):
                raise ValueError(f"{flag[f'max_{what}_in_flight']} must be at least {flag[f'max_{what}_per_request']}")


@dataclass(frozen=True)
class ParsedRequest:
    """A validated chat or text completion request. ``top_logprobs`` is None when no logprobs were asked."""

    chat: bool
    prompts: list[Prompt]
    params: SamplingParams
    top_logprobs: int | None = None
    stream: bool = False
    include_usage: bool = False


# ------------------------------------------------------------------ validation
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


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


def _number(body: dict, name: str, default: float, ok, expected: str) -> float:
    value = body.get(name)
    value = default if value is None else value
    if not _is_num(value) or not ok(value):
        raise RequestError(f"{name} must be {expected}, got {value!r}", name)
    return float(value)


def parse_sampling(body: dict, default_max_tokens: int) -> SamplingParams:
    """Sampling parameters of a request body, validated field by field."""
    n = body.get("n", 1)
    n = 1 if n is None else n
    if not _is_int(n) or not 1 <= n <= MAX_N:
        raise RequestError(f"n must be an integer in [1, {MAX_N}], got {n!r}", "n")
    temperature = _number(body, "temperature", 1.0, lambda v: v >= 0, "a finite number >= 0")
    top_p = _number(body, "top_p", 1.0, lambda v: 0 < v <= 1, "a number in (0, 1]")
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
    if not isinstance(stop, list) or len(stop) > MAX_STOPS or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them", "stop")
    if body.get("echo"):
        raise RequestError("echo is not supported by this server", "echo")
    if body.get("tools"):
        raise RequestError("tool calling is not supported by this server", "tools")
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise RequestError("best_of is not supported by this server (leave it unset or equal to n)", "best_of")
    return SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_tokens, seed=seed,
                          stop=tuple(stop))


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


def parse_completion_prompts(body: dict, limit: int) -> list[str]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if isinstance(prompts, list) and prompts and all(isinstance(p, str) for p in prompts):
        if len(prompts) > limit:
            raise RequestError(f"prompt lists {len(prompts)} prompts; this server takes at most {limit} per request "
                               "(--max-prompts-per-request)", "prompt")
        for i, p in enumerate(prompts):
            if not p:
                raise RequestError("prompts must not be empty strings", "prompt" if isinstance(prompt, str)
                                   else f"prompt[{i}]")
        return list(prompts)
    if isinstance(prompts, list) and prompts and all(_is_int(p) or isinstance(p, list) for p in prompts):
        raise RequestError("token-id prompts are not supported; send text", "prompt")
    raise RequestError("prompt must be a string or a non-empty list of strings", "prompt")


def parse_logprobs(body: dict, chat: bool) -> int | None:
    """Alternatives per token asked for (0 for the sampled token's logprob only), or None for no logprobs. Chat:
    ``logprobs: true`` with optional ``top_logprobs: k``; completions: ``logprobs: k``."""
    top, name = (body.get("top_logprobs"), "top_logprobs") if chat else (body.get("logprobs"), "logprobs")
    if top is not None and (not _is_int(top) or not 0 <= top <= MAX_TOP_LOGPROBS):
        raise RequestError(f"{name} must be an integer in [0, {MAX_TOP_LOGPROBS}], got {top!r}", name)
    if not chat:
        return top
    wanted = body.get("logprobs")
    if wanted is not None and not isinstance(wanted, bool):
        raise RequestError(f"logprobs must be a boolean, got {wanted!r}", "logprobs")
    if top is not None and not wanted:
        raise RequestError("top_logprobs needs logprobs: true", "top_logprobs")
    return (top or 0) if wanted else None


def parse_stream(body: dict) -> tuple[bool, bool]:
    """``(stream, include_usage)``."""
    stream, options = body.get("stream"), body.get("stream_options")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError(f"stream must be a boolean, got {stream!r}", "stream")
    if options is None:
        return bool(stream), False
    if not stream:
        raise RequestError("stream_options is only allowed with stream: true", "stream_options")
    usage = options.get("include_usage") if isinstance(options, dict) else None
    if not isinstance(options, dict) or (usage is not None and not isinstance(usage, bool)):
        raise RequestError("stream_options must be an object like {\"include_usage\": true}", "stream_options")
    return True, bool(usage)


def parse_request(body: dict, chat: bool, default_max_tokens: int, limits: Limits) -> ParsedRequest:
    """A chat (``chat``) or text completion request body, validated."""
    prompts: list[Prompt] = [parse_chat_prompt(body)] if chat else \
        list(parse_completion_prompts(body, limits.max_prompts_per_request))
    params = parse_sampling(body, default_max_tokens)
    stream, include_usage = parse_stream(body)
    return ParsedRequest(chat, prompts, params, parse_logprobs(body, chat), stream, include_usage)


def request_tokens(prompt_lengths: list[int], params: SamplingParams, context: int | None, limits: Limits) -> int:
    """The tokens a request may hold (see :class:`Limits`); a 400 beyond ``max_tokens_per_request``."""
    def budget(length: int) -> int:
        return max(1, min(params.max_new_tokens, context - length)) if context else params.max_new_tokens

    tokens = sum(params.n * (length + budget(length)) for length in prompt_lengths)
    if tokens > limits.max_tokens_per_request:
        raise RequestError(f"this request may hold {tokens} tokens (n * (prompt + max_tokens) over its prompts); "
                           f"the limit is {limits.max_tokens_per_request} per request (--max-tokens-per-request)",
                           "max_tokens")
    return tokens


class InFlight:
    """Prompts and tokens of the requests being served; :meth:`reserve` refuses with a 429 beyond the limits."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.prompts = self.tokens = 0
        self._lock = threading.Lock()

    def reserve(self, prompts: int, tokens: int) -> None:
        with self._lock:
            over = [(what, now, limit, flag) for what, now, limit, flag in (
                ("prompts", self.prompts + prompts, self.limits.max_prompts_in_flight, "--max-prompts-in-flight"),
                ("tokens", self.tokens + tokens, self.limits.max_tokens_in_flight, "--max-tokens-in-flight"))
                if now > limit]
            if over:
                what, now, limit, flag = over[0]
                raise RequestError(f"the server is busy: this request would bring the {what} in flight to {now}, "
                                   f"over its limit of {limit} ({flag}); retry later", status=429,
                                   type_="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"})
            self.prompts += prompts
            self.tokens += tokens

    def release(self, prompts: int, tokens: int) -> None:
        with self._lock:
            self.prompts -= prompts
            self.tokens -= tokens
