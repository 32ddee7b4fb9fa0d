"""Generation backends behind one contract; heavy ones are imported only when built."""

from __future__ import annotations

from openrft.models.backends.base import HTTP_LIMITS, Completion, Generator, HTTPLimits, Prompt, SamplingParams

BACKENDS = ("transformers", "openai", "vllm")


def make_generator(backend: str, model: str, *, base_url: str | None = None, batch_size: int = 32,
                   dtype: str = "auto", device: str | None = None, cache_dir: str | None = None,
                   http: HTTPLimits | None = None, **kwargs) -> Generator:
    """Build a generator by backend name: ``transformers`` (local), ``openai`` (any OpenAI-compatible server, within
    ``http``'s limits), ``vllm``."""
    if backend == "transformers":
        from openrft.models.backends.hf import TransformersGenerator

        return TransformersGenerator.from_pretrained(model, dtype=dtype, device=device, batch_size=batch_size)
    if backend == "openai":
        from openrft.models.backends.openai_http import OpenAIGenerator

        if not base_url:
            raise ValueError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        http = http or HTTPLimits()
        return OpenAIGenerator(base_url=base_url, model=model, cache_dir=cache_dir, concurrency=http.concurrency,
                               timeout_s=http.timeout, max_retries=http.max_retries, **kwargs)
    if backend == "vllm":
        from openrft.models.backends.vllm_backend import VLLMGenerator

        return VLLMGenerator(model, dtype=dtype, **kwargs)
    raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "HTTP_LIMITS", "Completion", "Generator", "HTTPLimits", "Prompt", "SamplingParams",
           "make_generator"]
