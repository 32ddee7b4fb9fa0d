"""The OpenAI response side of ``openrft serve``: completion bodies, stream chunks, logprobs, text deltas.

Streams are server-sent events, ``data: {chunk}\\n\\n`` each, ending with ``data: [DONE]\\n\\n``: a chat stream
opens each choice with ``delta: {"role": "assistant", "content": ""}``, sends ``delta: {"content": ...}`` as text
arrives and closes the choice with an empty delta carrying ``finish_reason``; with ``stream_options:
{"include_usage": true}`` every chunk has ``"usage": null`` and a last chunk with no choices carries the usage.

Logprobs are the model's log-probabilities (before temperature and top-p) of each sampled token and of the
top alternatives; a token's text is its own decoding, ``bytes`` that text's UTF-8 bytes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from openrft.models.backends.base import Completion
from openrft.models.backends.hf_batch import TokenLogprob
from openrft.serve.protocol import ParsedRequest

#: a finished choice: its completion and, when asked, its tokens' logprobs
Finished = tuple[Completion, Sequence[TokenLogprob]]


class TokenTexts:
    """Each token id's text, decoded once."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self.tokenizer.decode([token_id])
        return text

    def kept(self, token_ids: Sequence[int], text: str) -> int:
        """How many of a choice's tokens start before the end of its ``text`` (fewer than all only when a stop
        string cut the text)."""
        k = len(token_ids)
        while k > 0 and len(self.tokenizer.decode(list(token_ids[:k - 1]), skip_special_tokens=True)) >= len(text):
            k -= 1
        return k


def _entry(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(texts: TokenTexts, token_ids: Sequence[int], logprobs: Sequence[TokenLogprob]) -> dict:
    """A chat choice's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": None}``."""
    content = [{**_entry(texts(t), lp), "top_logprobs": [_entry(texts(a), alp) for a, alp in top]}
               for t, (lp, top) in zip(token_ids, logprobs)]
    return {"content": content, "refusal": None}


def completion_logprobs(texts: TokenTexts, token_ids: Sequence[int], logprobs: Sequence[TokenLogprob],
                        offset: int = 0) -> dict:
    """A text choice's ``logprobs``: ``tokens``, ``token_logprobs``, ``top_logprobs`` (token text -> logprob)
    and ``text_offset`` (from ``offset``, the length of the choice's text before these tokens)."""
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for t, (lp, top) in zip(token_ids, logprobs):
        text = texts(t)
        out["tokens"].append(text)
        out["token_logprobs"].append(lp)
        out["top_logprobs"].append({texts(a): alp for a, alp in top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


class TextStream:
    """One choice's text as its tokens arrive, as deltas that are never taken back: text that may still turn into
    a stop string, or ends in an unfinished UTF-8 character, waits until it cannot."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer, self.stops = tokenizer, stops
        self.tokens: list[int] = []
        self.sent = ""

    def push(self, token_ids: Sequence[int]) -> str:
        self.tokens.extend(token_ids)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = min((text.find(s) for s in self.stops if s in text), default=-1)
        if cut >= 0:
            text = text[:cut]
        else:
            hold = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
            text = text[:len(text) - hold]
        text = text.rstrip("\ufffd")
        if not text.startswith(self.sent):  # decoding changed earlier text: the final text settles it
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def finish(self, final_text: str) -> str:
        """What the final text adds to what was sent."""
        delta = final_text[len(self.sent):] if final_text.startswith(self.sent) else ""
        self.sent = final_text
        return delta


class Reply:
    """Builds the bodies of one request's response: the whole completion, or its stream chunks."""

    def __init__(self, req: ParsedRequest, model: str, texts: TokenTexts | None):
        self.req, self.model, self.texts = req, model, texts
        self.id = f"{'chatcmpl' if req.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _head(self, stream: bool) -> dict[str, Any]:
        obj = ("chat.completion.chunk" if stream else "chat.completion") if self.req.chat else "text_completion"
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def _logprobs(self, token_ids: Sequence[int], logprobs: Sequence[TokenLogprob], offset: int = 0) -> dict | None:
        if self.req.top_logprobs is None or self.texts is None:
            return None
        if self.req.chat:
            return chat_logprobs(self.texts, token_ids, logprobs)
        return completion_logprobs(self.texts, token_ids, logprobs, offset)

    def body(self, done: dict[int, Finished], prompt_tokens: int) -> dict:
        """The non-streaming response, choices in index order."""
        choices = []
        for index in sorted(done):
            c, logprobs = done[index]
            choice: dict[str, Any] = {"index": index}
            if self.req.chat:
                choice["message"] = {"role": "assistant", "content": c.text}
            else:
                choice["text"] = c.text
            ids = (c.token_ids or ())[:c.num_tokens]
            kept = self.texts.kept(ids, c.text) if self.texts is not None and logprobs else len(logprobs)
            choice["logprobs"] = self._logprobs(ids[:kept], logprobs[:kept])
            choice["finish_reason"] = c.finish_reason
            choices.append(choice)
        completion_tokens = sum(c.num_tokens for c, _ in done.values())
        return {**self._head(False), "choices": choices, "usage": usage(prompt_tokens, completion_tokens)}

    def chunk(self, index: int, text: str | None = None, *, role: bool = False, finish: str | None = None,
              token_ids: Sequence[int] = (), logprobs: Sequence[TokenLogprob] = (), offset: int = 0) -> str:
        """One SSE event for choice ``index``: its opening (``role``), new ``text``, or its end (``finish``)."""
        choice: dict[str, Any] = {"index": index}
        if self.req.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text or ""
        choice["logprobs"] = self._logprobs(token_ids, logprobs, offset) if logprobs else None
        choice["finish_reason"] = finish
        extra = {"usage": None} if self.req.include_usage else {}
        return sse({**self._head(True), "choices": [choice], **extra})

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> str:
        return sse({**self._head(True), "choices": [], "usage": usage(prompt_tokens, completion_tokens)})


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(data: Any) -> str:
    """One server-sent event carrying ``data`` as JSON (or ``[DONE]``)."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"
