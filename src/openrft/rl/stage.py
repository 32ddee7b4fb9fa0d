"""The RL stage: :func:`run_rl` skips a finished run with the same settings and inputs, resumes an interrupted one
from its last checkpoint, or trains with :class:`~openrft.rl.trainer.RLTrainer`; the manifest records the
stage's identity (settings, data, prompts, the bytes of local adapters, models and PRMs) and its outcome."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from openrft.core.rundir import begin_stage, finish_stage, pin_local_inputs, stable_hash
from openrft.core.tracking import check_installed
from openrft.data.sample import Sample
from openrft.rewards.base import CompositeReward
from openrft.rl.config import RLConfig, rl_settings
from openrft.rl.logs import read_metrics
from openrft.rl.trainer import ADAPTER, CHECKPOINTS, STAGE, ExamplesFor, RLResult, RLTrainer
from openrft.tasks.base import task_for

logger = logging.getLogger(__name__)


def run_rl(config: RLConfig, out_dir: str | os.PathLike, samples: Sequence[Sample] | None = None, *,
           examples_for: ExamplesFor | None = None, reward: CompositeReward | None = None,
           show_progress: bool = True) -> RLResult:
    """Run (or skip, or resume) the RL stage into ``out_dir``.

    ``samples`` default to ``config.data``. A finished run with the same config and inputs is skipped;
    an interrupted one resumes from its last checkpoint (``save_every``).
    """
    from openrft.data.loaders import load_sources

    check_installed(config.report_to or [])  # before any model or data loads
    out = Path(out_dir)
    if samples is None:
        if not config.data:
            raise ValueError("no training data: give samples or config.data (e.g. ['arithmetic'])")
        samples = load_sources(config.data, split=config.split, limit_per_task=config.limit)
    samples = list(samples)
    inputs = {"data": stable_hash([s.to_dict() if hasattr(s, "to_dict") else repr(s) for s in samples])}
    if examples_for is not None:  # few-shot prompts: other shots (or shot replies) are other training inputs
        inputs["prompts"] = stable_hash([task_for(s).messages(s, list(examples_for(s))) for s in samples])
    cfg_dict = rl_settings(config)
    resolved = {}
    if config.adapter:
        from openrft.models.lora import resolve_adapter_dir

        resolved["adapter"] = resolve_adapter_dir(config.adapter)  # a stacked adapter includes its base
    if config.reward.prm:  # a local PRM's weights, not only its path: a retrained PRM reruns the stage
        from openrft.rewards.prm.value_head import resolve_checkpoint_dir

        resolved["reward.prm"] = resolve_checkpoint_dir(config.reward.prm)
    # a fully fine-tuned SFT model at an unchanged path is known by its bytes too
    paths = pin_local_inputs(cfg_dict, inputs, {"adapter": config.adapter, "model": config.model,
                                                "reward.prm": config.reward.prm}, resolved)
    manifest, finished = begin_stage(out, STAGE, cfg_dict, inputs, seed=config.seed, resume_keys=[CHECKPOINTS])
    if finished and (out / ADAPTER / "adapter_config.json").exists():
        logger.info("rl: %s already finished with the same config and inputs; skipping", out)
        return RLResult(out, out / ADAPTER, config.resolved_steps(len(samples)), skipped=True,
                        metrics=read_metrics(out))
    t0 = time.perf_counter()
    trainer = RLTrainer(config, samples, out, reward=reward, examples_for=examples_for, show_progress=show_progress)
    result = trainer.train()
    metrics = read_metrics(out)
    first, last = (metrics[0], metrics[-1]) if metrics else ({}, {})
    finish_stage(out, manifest, steps=result.steps, samples=len(samples),
                 train_seconds=round(time.perf_counter() - t0, 2),
                 first_reward=first.get("reward"), last_reward=last.get("reward"),
                 first_accuracy=first.get("accuracy"), last_accuracy=last.get("accuracy"),
                 resumed_from_step=result.resumed_from, adapter=str(result.adapter_dir), **paths,
                 **({"epochs": config.epochs} if config.epochs is not None else {}))
    result.metrics = metrics
    return result
