"""Generator over any OpenAI-compatible HTTP server (vLLM, SGLang, Ollama, OpenAI, ``openrft serve``).

Chat prompts go to ``/chat/completions``, raw strings to ``/completions``, one request per
prompt asking for ``n`` choices. Requests run in a thread pool over one ``httpx.Client``.

Reliability:

* connection errors, timeouts, 408/429/5xx and malformed bodies are retried with exponential
  backoff and jitter (``Retry-After`` / ``retry-after-ms`` honoured; :mod:`openrft.models.http`,
  the client every openrft HTTP peer uses); any other 4xx fails at once with the server's
  message; after ``max_retries`` a :class:`GenerationError` names the URL, the last status and
  the last error, and the flags that change the limits (``--timeout``, ``--max-retries``,
  ``--concurrency``: :class:`~openrft.models.backends.base.HTTPLimits`);
* with ``cache_dir``, every sample is written to disk as soon as its request returns, keyed by
  the endpoint path, model, prompt, sampling parameters and sample index (not the host, so a
  restarted server on another port still hits the cache). A rerun after a crash re-pays only
  the samples that are missing.

Samples: the sample index of a prompt's ``s``-th completion is ``s`` (``k * n + s`` for the
``k``-th repeat of the same prompt in one call, so repeats get different samples). A request
covering samples ``i..`` sends ``seed`` itself when ``i == 0`` and a seed derived from
``(seed, i)`` otherwise, so samples fetched one by one (servers that ignore ``n``) differ.
Greedy requests (``temperature == 0``) are sent once per distinct prompt and the completion
copied ``n`` times.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import httpx

from openrft.models.backends.base import Completion, Generator, Prompt, SamplingParams
from openrft.models.backends.cache import ResponseCache, cache_key
from openrft.models.http import Aborted, Rejected, RequestFailed, RetryingClient

logger = logging.getLogger(__name__)

class GenerationError(RequestFailed):
    """A request failed for good. ``url``, ``status`` (None without a response) and ``last_error`` say why."""


@dataclass
class _Target:
    path: str  # "/chat/completions" or "/completions"
    payload: dict  # {"messages": [...]} or {"prompt": "..."}


def _derive_seed(seed: int, index: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def _split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """Share ``total`` tokens over choices in proportion to their lengths (largest remainder)."""
    weights = [len(t) for t in texts]
    if sum(weights) == 0:
        weights = [1] * len(texts)
    raw = [total * w / sum(weights) for w in weights]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: out[i] - raw[i])[: total - sum(out)]:
        out[i] += 1
    return out


def _estimate_tokens(text: str) -> int:
    return max(1, round(len(text) / 4)) if text else 0


def parse_choices(data: Any, chat: bool) -> list[Completion]:
    """Completions from an OpenAI response body; raises ``ValueError`` when the body is not one."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        detail = f": {data['error']}" if "error" in data else ""
        raise ValueError(f"no 'choices' list in the response{detail}")
    if all(isinstance(c, dict) and isinstance(c.get("index"), int) for c in choices):
        choices = sorted(choices, key=lambda c: c["index"])
    texts, reasons = [], []
    for c in choices:
        if not isinstance(c, dict):
            raise ValueError("a choice is not a JSON object")
        if chat:
            message = c.get("message")
            if not isinstance(message, dict):
                raise ValueError("a chat choice has no 'message' object")
            text = message.get("content")
            if isinstance(text, list):  # content parts
                text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
            text = "" if text is None else text
        else:
            text = c.get("text")
        if not isinstance(text, str):
            raise ValueError(f"a choice has no text (got {type(text).__name__})")
        texts.append(text)
        reasons.append(c.get("finish_reason") or "stop")
    usage = data.get("usage")
    total = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        counts = _split_tokens(total, texts)
    else:
        counts = [_estimate_tokens(t) for t in texts]
    return [Completion(text=t, num_tokens=k, finish_reason=str(r)) for t, k, r in zip(texts, counts, reasons)]


class OpenAIGenerator(Generator):
    """Generator over an OpenAI-compatible server.

    Args:
        base_url: server root, e.g. ``http://127.0.0.1:8000/v1`` (a bare ``http://host:port`` gets ``/v1``).
        model: model name sent with every request.
        api_key: bearer token; defaults to ``$OPENAI_API_KEY`` (none sent when unset).
        concurrency: requests in flight at once.
        timeout_s: per-request timeout (connect, read, write) in seconds.
        max_retries: retries after the first attempt for retryable failures.
        backoff_s: first retry delay; doubles per retry, with jitter, capped at ``max_backoff_s``.
        cache_dir: directory of the on-disk response cache; None disables it.
        extra_body: extra JSON fields merged into every request; a ``None`` value removes a field
            (e.g. ``{"max_tokens": None, "max_completion_tokens": 512}``).
        headers: extra HTTP headers.
        max_n_per_request: most choices asked in one request; larger ``n`` is split.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        cache_dir: str | os.PathLike | None = None,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        max_n_per_request: int = 64,
    ):
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http(s) URL like http://127.0.0.1:8000/v1, got {base_url!r}")
        base = str(base_url).rstrip("/")
        self.base_url = base + "/v1" if url.path in ("", "/") else base
        if concurrency < 1 or max_retries < 0 or timeout_s <= 0 or max_n_per_request < 1:
            raise ValueError("need concurrency >= 1, max_retries >= 0, timeout_s > 0, max_n_per_request >= 1")
        self.model = model
        self.concurrency = concurrency
        self.extra_body = dict(extra_body or {})
        self.max_n_per_request = max_n_per_request
        self.cache = ResponseCache(cache_dir) if cache_dir is not None else None
        self._n_ok = True  # cleared once the server is seen to ignore or reject n > 1
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        all_headers = {"User-Agent": "openrft"}
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        all_headers.update(headers or {})
        self._http = RetryingClient(
            timeout_s=timeout_s, max_retries=max_retries, backoff_s=backoff_s, max_backoff_s=max_backoff_s,
            headers=all_headers, concurrency=concurrency, error=GenerationError,
            hint=f"Check that the server is up and reachable at this URL; a slow server needs a longer --timeout (now "
                 f"{timeout_s:g} s), a flaky one more --max-retries (now {max_retries}); in a recipe, the stage's "
                 "timeout and max_retries keys.")

    def __repr__(self) -> str:
        return f"OpenAIGenerator({self.base_url!r}, model={self.model!r})"

    @property
    def timeout_s(self) -> float:
        return self._http.timeout_s

    @property
    def max_retries(self) -> int:
        return self._http.max_retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "OpenAIGenerator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ public
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[Completion]]:
        """``params.n`` completions per prompt. Samples read from the cache count as done with 0 new tokens."""
        return self.generate_each(prompts, params, lambda i, out: None, progress)

    def generate_each(self, prompts, params, on_item, progress=None) -> list[list[Completion]]:
        targets = [self._target(p, i) for i, p in enumerate(prompts)]
        n = params.n
        # distinct prompts -> the result slots (position, sample) each sample index fills
        distinct: dict[str, tuple[_Target, dict[int, list[tuple[int, int]]]]] = {}
        for pos, target in enumerate(targets):
            ident = cache_key([target.path, target.payload])
            _, slots = distinct.setdefault(ident, (target, {}))
            repeat = sum(len(v) for v in slots.values()) // n if not params.greedy else 0
            for s in range(n):
                slots.setdefault(0 if params.greedy else repeat * n + s, []).append((pos, s))

        results: list[list[Completion | None]] = [[None] * n for _ in targets]
        units: list[tuple[_Target, list[int], dict[int, list[tuple[int, int]]]]] = []
        cached = 0
        for target, slots in distinct.values():
            missing = []
            for index, where in slots.items():
                hit = self.cache.get(self._key(target, params, index)) if self.cache is not None else None
                if hit is not None:
                    comp = Completion(hit["text"], int(hit.get("num_tokens", 0)), hit.get("finish_reason", "stop"))
                    for pos, s in where:
                        results[pos][s] = comp
                    cached += len(where)
                else:
                    missing.append(index)
            for i in range(0, len(missing), self.max_n_per_request):
                units.append((target, missing[i: i + self.max_n_per_request], slots))
        if progress is not None and cached:
            progress(cached, 0)
        for pos, row in enumerate(results):
            if all(c is not None for c in row):
                on_item(pos, row)
        if units:
            self._run_units(units, params, results, progress, on_item)
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- internals
    def _target(self, prompt: Prompt, position: int) -> _Target:
        if isinstance(prompt, str):
            return _Target("/completions", {"prompt": prompt})
        messages = []
        for j, m in enumerate(prompt):
            if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                raise ValueError(
                    f"prompt {position}, message {j}: expected a {{'role', 'content'}} mapping, got {m!r:.200}"
                )
            messages.append(dict(m))
        if not messages:
            raise ValueError(f"prompt {position} is an empty chat (no messages)")
        return _Target("/chat/completions", {"messages": messages})

    def _key(self, target: _Target, params: SamplingParams, index: int) -> str:
        return cache_key({
            "path": httpx.URL(self.base_url + target.path).path,
            "model": self.model,
            **target.payload,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "stop": list(params.stop),
            "seed": None if params.greedy else params.seed,
            "extra_body": self.extra_body,
            "sample": index,
        })

    def _body(self, target: _Target, params: SamplingParams, n: int, first_index: int) -> dict:
        body: dict[str, Any] = {"model": self.model, **target.payload, "temperature": params.temperature,
                                "max_tokens": params.max_new_tokens}
        if n > 1:
            body["n"] = n
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed if first_index == 0 else _derive_seed(params.seed, first_index)
        for k, v in self.extra_body.items():
            if v is None:
                body.pop(k, None)
            else:
                body[k] = v
        return body

    def _run_units(self, units, params, results, progress, on_item) -> None:
        stop = threading.Event()
        errors: list[BaseException] = []
        done_units = 0
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(units)), thread_name_prefix="openai-http")
        try:
            futures = {pool.submit(self._run_unit, target, indices, params, stop): (indices, slots)
                       for target, indices, slots in units}
            for fut in as_completed(futures):
                indices, slots = futures[fut]
                try:
                    samples = fut.result()
                except Aborted:
                    continue
                except BaseException as err:  # noqa: BLE001 - reported below, after in-flight requests land
                    errors.append(err)
                    stop.set()
                    continue
                done_units += 1
                filled = 0
                touched = set()
                for index, comp in zip(indices, samples):
                    for pos, s in slots[index]:
                        results[pos][s] = comp
                        filled += 1
                        touched.add(pos)
                if progress is not None:
                    progress(filled, sum(c.num_tokens for c in samples))
                for pos in sorted(touched):
                    if all(c is not None for c in results[pos]):
                        on_item(pos, results[pos])
        except BaseException:  # KeyboardInterrupt: stop retries, keep what landed in the cache
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if errors:
            err = errors[0]
            if not isinstance(err, GenerationError):
                raise err
            where = f"; finished samples are cached in {self.cache.root}, rerun to fetch only the missing ones" \
                if self.cache is not None else "; pass cache_dir to keep finished samples across reruns"
            summary = f"{len(errors)} of {len(units)} requests failed ({done_units} finished){where}"
            raise GenerationError(f"{err} {summary}.", url=err.url, status=err.status,
                                  last_error=err.last_error, attempts=err.attempts) from err

    def _run_unit(self, target: _Target, indices: list[int], params: SamplingParams,
                  stop: threading.Event) -> list[Completion]:
        """All samples of ``indices``: one request for all when the server honours ``n``, else one each."""
        if stop.is_set():
            raise Aborted
        got: list[Completion] = []
        if len(indices) > 1 and self._n_ok:
            try:
                got = self._request(target, params, indices, stop)
            except Rejected as err:  # maybe n > 1 itself; try one sample per request
                logger.warning("%s rejected n=%d (%s); trying one request per sample",
                               err.url, len(indices), err.message)
            if len(got) < len(indices):
                logger.info("%s returned %d of %d choices; asking for the rest one by one",
                            self.base_url + target.path, len(got), len(indices))
        for index in indices[len(got):]:
            try:
                got += self._request(target, params, [index], stop)
            except Rejected as err:
                raise GenerationError(
                    f"POST {err.url} was rejected with status {err.status}: {err.message}",
                    url=err.url, status=err.status, last_error=err.message, attempts=1,
                ) from None
            if len(indices) > 1:
                self._n_ok = False  # singles work where n > 1 did not, or gave too few choices
        return got

    def _request(self, target: _Target, params: SamplingParams, indices: list[int],
                 stop: threading.Event) -> list[Completion]:
        body = self._body(target, params, len(indices), indices[0])
        chat = target.path == "/chat/completions"
        samples = self._http.post_json(self.base_url + target.path, body, lambda data: parse_choices(data, chat),
                                       stop=stop)
        samples = samples[: len(indices)]
        if self.cache is not None:
            for index, comp in zip(indices, samples):
                self.cache.put(self._key(target, params, index), {
                    "text": comp.text, "num_tokens": comp.num_tokens, "finish_reason": comp.finish_reason,
                    "model": self.model, "created": time.time(),
                })
        return samples
