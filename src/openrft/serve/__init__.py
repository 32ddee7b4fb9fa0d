"""An OpenAI-compatible HTTP server over any :class:`~openrft.models.backends.base.Generator` (``openrft serve``).

Endpoints: ``POST /v1/chat/completions`` and ``POST /v1/completions`` (``stream: true`` for server-sent events,
logprobs, ``n``, ``stop``, ``seed``), ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health``. Responses
follow the OpenAI layout; refusals get an ``{"error": {"message", "type", "param", "code"}}`` body naming the
field or the limit at fault. With an API key, ``/v1`` needs ``Authorization: Bearer KEY`` (401 otherwise).

Layout: :mod:`.protocol` (requests, limits), :mod:`.responses` (bodies, chunks, logprobs), :mod:`.jobs`
(requests in flight, the scheduler for plain generators), :mod:`.scheduler` (continuous batching for the
transformers backend), :mod:`.app` (the Starlette application), :mod:`.server` (uvicorn on a bound socket),
:mod:`.command` (the flags). Starlette and uvicorn are imported only here.

In Python::

    server = make_server(generator, "my-model").start()    # a free port on 127.0.0.1
    client = OpenAIGenerator(server.url + "/v1", "my-model")
    ...
    server.stop()
"""

from __future__ import annotations

from openrft.serve.command import build_parser, main, server_from_args
from openrft.serve.protocol import Limits, RequestError
from openrft.serve.server import OpenAIServer, make_server

__all__ = ["Limits", "OpenAIServer", "RequestError", "build_parser", "main", "make_server", "server_from_args"]
