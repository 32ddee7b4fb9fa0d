"""The ``openrft serve`` server object: the Starlette app under uvicorn on a socket bound at construction."""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any

import uvicorn

from openrft.models.backends.base import Generator
from openrft.models.backends.hf import TransformersGenerator
from openrft.serve.app import ServeState, create_app
from openrft.serve.jobs import Batcher
from openrft.serve.protocol import Limits
from openrft.serve.scheduler import EngineScheduler

logger = logging.getLogger(__name__)


def is_local(host: str) -> bool:
    """Whether ``host`` is a loopback address (reachable from this machine only)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenAIServer:
    """An OpenAI-compatible server over a generator, bound to ``host:port`` (0: a free port) at construction.

    ``start()`` serves in a background thread and ``stop()`` ends it (``with`` does both); ``serve_forever()``
    serves in the calling thread until Ctrl-C. OpenAI clients take ``url + "/v1"`` as their base URL.
    A :class:`TransformersGenerator` is decoded by :class:`EngineScheduler` (continuous batching, streaming
    token by token, logprobs, cancellation); any other generator by :class:`Batcher` (whole ``generate`` calls).
    """

    def __init__(self, generator: Generator, model_name: str, host: str = "127.0.0.1", port: int = 0, *,
                 api_key: str | None = None, default_max_tokens: int = 512, limits: Limits | None = None,
                 max_batch_sequences: int = 256):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family)
        self.model_name = model_name
        self.scheduler = EngineScheduler(generator) if isinstance(generator, TransformersGenerator) \
            else Batcher(generator, max_batch_sequences=max_batch_sequences)
        self.state = ServeState(generator, model_name, self.scheduler, limits or Limits(), api_key or None,
                                default_max_tokens)
        config = uvicorn.Config(create_app(self.state), log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5, timeout_keep_alive=30)
        self._uvicorn = uvicorn.Server(config)
        self._thread: threading.Thread | None = None
        if not api_key and not is_local(self.host):
            logger.warning("openrft serve listens on %s without an API key: anyone who can reach this address can "
                           "use the model; set --api-key", self.host)

    @property
    def host(self) -> str:
        return self._socket.getsockname()[0]

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> "OpenAIServer":
        """Serve in a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._uvicorn.run, kwargs={"sockets": [self._socket]},
                                        name="openrft-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("openrft serve did not start (see the log)")
            time.sleep(0.01)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C or SIGTERM, then release everything."""
        try:
            self._uvicorn.run(sockets=[self._socket])
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving: refuse new connections, fail the requests still waiting, close the socket."""
        self._uvicorn.should_exit = True
        self.scheduler.close()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self._socket.close()

    def __enter__(self) -> "OpenAIServer":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def make_server(generator: Generator, model_name: str, host: str = "127.0.0.1", port: int = 0,
                **kwargs: Any) -> OpenAIServer:
    """A server for ``generator`` bound to ``host:port`` (0: a free port), not yet serving: ``.start()`` serves in a
    background thread (``.stop()`` ends it), ``.serve_forever()`` in this one. Keyword arguments: those of
    :class:`OpenAIServer` (``api_key``, ``default_max_tokens``, ``limits``)."""
    return OpenAIServer(generator, model_name, host=host, port=port, **kwargs)
