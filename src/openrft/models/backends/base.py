"""The generation contract shared by every backend (transformers, OpenAI-compatible HTTP, vLLM)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Union

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


@dataclass(frozen=True)
class Completion:
    """One generated continuation: its text, how many tokens it took, and why it stopped (``stop`` | ``length``).

    Local backends also return ``token_ids``: the sampled tokens, ending with the end-of-sequence token
    when the model stopped by itself, so RL trains on exactly what was sampled rather than a re-tokenization.
    They are a transport detail, not part of a completion's identity: two completions with the same text,
    length and finish reason compare equal whether or not a backend (the HTTP client, the cache) kept them.
    """

    text: str
    num_tokens: int
    finish_reason: str = "stop"
    token_ids: tuple[int, ...] | None = field(default=None, compare=False)


class Generator(ABC):
    """``generate(prompts, params) -> [[Completion] * params.n] * len(prompts)``, in prompt order."""

    name: str = "generator"

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

    def close(self) -> None:  # pragma: no cover - trivial
        """Release resources (HTTP sessions, GPU memory)."""
