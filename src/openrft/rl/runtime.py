"""Where an RL step runs: one or several processes (``torch.distributed``), and the rollout engine when it is
vLLM rather than the policy itself."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from openrft.models.lora import save_atomic
from openrft.rl.config import RLConfig
from openrft.rl.policy import ActorCritic


class DistState:
    """Rank, world size and device under ``accelerate launch`` / torchrun; one CPU/GPU process otherwise.

    Each process generates and scores its share of the step's prompts (whole groups, so group
    estimators stay exact; batch whitening is per process) and LoRA gradients are averaged across
    processes before each optimizer step (the adapters are small, so a plain all-reduce is cheap).
    """

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = None
        if self.world > 1:
            import torch.distributed as dist

            if torch.cuda.is_available():
                local = int(os.environ.get("LOCAL_RANK", "0"))
                torch.cuda.set_device(local)
                self.device = torch.device("cuda", local)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
            self.world, self.rank = dist.get_world_size(), dist.get_rank()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def average_gradients(self, params) -> None:
        if self.world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.SUM)
            p.grad.div_(self.world)


class VLLMRollouts:
    """Rollouts through vLLM (CUDA): the current policy adapter is written each step and loaded by the engine,
    rather than syncing full weights. The engine's base is the model (with the SFT adapter merged, if any)."""

    def __init__(self, config: RLConfig, out: Path, actor_critic: ActorCritic, tokenizer):
        from openrft.models.backends.vllm_backend import VLLMGenerator

        base = config.model
        if config.adapter is not None:
            merged = out / "rollout_base"
            if not (merged / "config.json").exists():
                # the policy model's base weights are the merged SFT model; write them once for the engine
                inner = actor_critic.model.get_base_model()
                with actor_critic.model.disable_adapter():
                    save_atomic(lambda tmp: (inner.save_pretrained(tmp, safe_serialization=True),
                                             tokenizer.save_pretrained(tmp)), merged)
            base = str(merged)
        self.out = out
        self.actor_critic = actor_critic
        self.engine = VLLMGenerator(base, enable_lora=True, max_lora_rank=max(8, config.lora_rank),
                                    gpu_memory_utilization=0.4)

    def generate(self, prompts, params):
        path = self.out / "rollout_adapter"
        save_atomic(lambda tmp: self.actor_critic.save_policy(tmp), path)
        self.engine.set_adapter(str(path))
        return self.engine.generate(prompts, params)
