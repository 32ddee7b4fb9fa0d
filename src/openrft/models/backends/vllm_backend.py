"""vLLM generation backend (optional extra: ``pip install openrft[vllm]``).

vLLM is imported only when this backend is built. A LoRA adapter directory can be given
per call (``lora_path``), so RL rollouts load the current adapter each step instead of
syncing full weights into the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from openrft.models.backends.base import Completion, Generator, Prompt, SamplingParams


class VLLMGenerator(Generator):
    name = "vllm"

    def __init__(self, model: str, *, dtype: str = "auto", max_lora_rank: int = 64, enable_lora: bool = False,
                 gpu_memory_utilization: float = 0.85, **engine_kwargs):
        try:
            from vllm import LLM
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("the vllm backend needs vLLM: pip install 'openrft[vllm]' (CUDA machines only)") from err
        from openrft.models.loading import resolve_model

        self.llm = LLM(model=resolve_model(model), dtype=dtype, enable_lora=enable_lora, max_lora_rank=max_lora_rank,
                       gpu_memory_utilization=gpu_memory_utilization, **engine_kwargs)
        engine_config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        resolved = str(getattr(engine_config, "dtype", dtype)).removeprefix("torch.")
        self._precision = None if resolved == "float32" else resolved
        self._lora_id = 0
        self.lora_path: str | None = None

    @property
    def precision(self) -> str | None:
        return self._precision

    def set_adapter(self, lora_path: str | None) -> None:
        """Use this LoRA adapter directory for the following calls (``None``: the base model)."""
        self.lora_path = lora_path
        self._lora_id += 1

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                 progress: Callable[[int, int], None] | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams as VSP

        sp = VSP(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                 seed=params.seed, stop=list(params.stop) or None)
        lora = None
        if self.lora_path:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest(f"adapter-{self._lora_id}", self._lora_id, self.lora_path)
        chats = [p for p in prompts if not isinstance(p, str)]
        if chats and len(chats) != len(prompts):
            raise ValueError("mixing chat and raw-string prompts in one call is not supported by the vllm backend")
        if chats:
            outs = self.llm.chat([list(p) for p in prompts], sp, lora_request=lora, use_tqdm=False)
        else:
            outs = self.llm.generate(list(prompts), sp, lora_request=lora, use_tqdm=False)
        result = []
        for o in outs:
            row = [Completion(c.text, len(c.token_ids), c.finish_reason or "stop", tuple(c.token_ids)) for c in o.outputs]
            if progress is not None:
                progress(len(row), sum(c.num_tokens for c in row))
            result.append(row)
        return result
