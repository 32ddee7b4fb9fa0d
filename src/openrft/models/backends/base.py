"""The generation contract shared by every backend (transformers, OpenAI-compatible HTTP, vLLM)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

Message = dict[str, str]
# A prompt is a chat (list of {"role", "content"} messages, rendered with the model's chat
# template) or a raw string that is fed to the model as is.
Prompt = Union[str, Sequence[Message]]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


#: the HTTP backend's limits: name (flag --<name with dashes>, recipe key) -> (default, help)
HTTP_LIMITS: dict[str, tuple[float | int, str]] = {
    "timeout": (60.0, "openai backend: seconds one request may take before it is retried"),
    "concurrency": (8, "openai backend: requests in flight at once"),
    "max_retries": (5, "openai backend: retries of a request after a connection error, timeout, 408/429/5xx or "
                       "malformed reply, with exponential backoff"),
}


def http_limit(name: str):
    """A dataclass field for one of :data:`HTTP_LIMITS`, for the configs of stages that generate over HTTP."""
    default, help_ = HTTP_LIMITS[name]
    return field(default=default, metadata={"help": help_})


@dataclass(frozen=True)
class HTTPLimits:
    """How long, how many at once and how often the openai backend asks (``--timeout``, ``--concurrency``,
    ``--max-retries``; the same keys in a recipe's stage sections)."""

    timeout: float = http_limit("timeout")
    concurrency: int = http_limit("concurrency")
    max_retries: int = http_limit("max_retries")

    @classmethod
    def of(cls, config: object) -> "HTTPLimits":
        """The limits a stage config holds in its fields of the same names (declared with :func:`http_limit`)."""
        return cls(**{name: getattr(config, name) for name in HTTP_LIMITS})

    def __post_init__(self) -> None:
        if not self.timeout > 0 or self.concurrency < 1 or self.max_retries < 0:
            raise ValueError(f"need timeout > 0, concurrency >= 1 and max_retries >= 0, got timeout={self.timeout}, "
                             f"concurrency={self.concurrency}, max_retries={self.max_retries}")


@dataclass(frozen=True)
class Completion:
    """One generated continuation: its text, how many tokens it took, and why it stopped (``stop`` | ``length``).

    Local backends also return ``token_ids``: the sampled tokens, ending with the end-of-sequence token
    when the model stopped by itself, so RL trains on exactly what was sampled rather than a re-tokenization.
    They are a transport detail, not part of a completion's identity: two completions with the same text,
    length and finish reason compare equal whether or not a backend (the HTTP client, the cache) kept them.
    So is ``hidden_states``: the transformers backend, asked for them (``generate(..., hidden_states=True)``),
    gives the LM head's input each of ``token_ids`` was sampled from, ``[len(token_ids), H]``.
    """

    text: str
    num_tokens: int
    finish_reason: str = "stop"
    token_ids: tuple[int, ...] | None = field(default=None, compare=False)
    hidden_states: Any = field(default=None, compare=False, repr=False)


class Generator(ABC):
    """``generate(prompts, params) -> [[Completion] * params.n] * len(prompts)``, in prompt order."""

    name: str = "generator"

    @property
    def precision(self) -> str | None:
        """The dtype the weights compute in where it is not fp32 (``"bfloat16"``), else None (fp32, or an engine
        behind HTTP whose precision is its own): stages add it to their identity, so a bf16 run never stands in
        for an fp32 one."""
        return None

    @abstractmethod
    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[Completion]]:
        """Sample ``params.n`` completions for each prompt.

        ``progress(done_sequences, new_tokens)`` is called as sequences finish so callers
        can show a progress bar with throughput.
        """

    def generate_each(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        on_item: Callable[[int, list[Completion]], None],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[list[Completion]]:
        """:meth:`generate`, calling ``on_item(i, completions)`` once prompt ``i``'s completions are all done.

        Callers save each finished item there, so a kill loses only the items in flight. This default calls it
        after the whole call; the local and HTTP backends call it as each prompt finishes.
        """
        return _each_after(self.generate(prompts, params, progress), on_item)

    def too_long(self, prompts: Sequence[Prompt]) -> dict[int, str]:
        """The prompts the model cannot take, by index, each with why (``"9000 tokens, context 8192"``); ``{}`` when
        the backend cannot tell without sending them (a remote server checks them itself)."""
        return {}

    def close(self) -> None:  # pragma: no cover - trivial
        """Release resources (HTTP sessions, GPU memory)."""


def _each_after(outs: list[list[Completion]], on_item: Callable[[int, list[Completion]], None]):
    for i, out in enumerate(outs):
        on_item(i, out)
    return outs


def generate_settings(generator, prompts: Sequence[Prompt], settings: Sequence[SamplingParams],
                      on_item: Callable[[int, list[Completion]], None],
                      progress: Callable[[int, int], None] | None = None) -> list[list[Completion]]:
    """Each prompt's completions under several sampling settings, in one list per prompt: ``settings[0].n``
    completions, then ``settings[1].n``, and so on; ``on_item(i, completions)`` once prompt ``i`` has them all.

    A generator with its own ``generate_settings`` decodes them in one pass (the transformers backend: a prompt's
    rows of every setting share one prefill, so an evaluation's sampled runs and its greedy run prefill each
    prompt once); any other runs one call per setting, the last with ``on_item``. Each setting's completions are
    what a call with that setting alone gives (the transformers backend: to float rounding, as any batch).
    """
    if not settings:
        raise ValueError("generate_settings needs at least one SamplingParams")
    method = getattr(generator, "generate_settings", None)
    if method is not None:
        return method(prompts, settings, on_item, progress=progress)
    earlier: list[list[Completion]] = [[] for _ in prompts]
    for params in settings[:-1]:
        for i, outs in enumerate(generator.generate(prompts, params, progress)):
            earlier[i].extend(outs)
    last = generate_each(generator, prompts, settings[-1], lambda i, outs: on_item(i, earlier[i] + list(outs)),
                         progress)
    return [before + list(outs) for before, outs in zip(earlier, last)]


def generate_each(generator, prompts: Sequence[Prompt], params: SamplingParams,
                  on_item: Callable[[int, list[Completion]], None],
                  progress: Callable[[int, int], None] | None = None) -> list[list[Completion]]:
    """:meth:`Generator.generate_each` for any object with a ``generate`` method (duck-typed generators too)."""
    method = getattr(generator, "generate_each", None)
    if method is not None:
        return method(prompts, params, on_item, progress=progress)
    return _each_after(generator.generate(prompts, params, progress), on_item)
