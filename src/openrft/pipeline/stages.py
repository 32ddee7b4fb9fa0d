"""The pipeline's stages, one adapter each: what a cell hands a stage (:class:`CellContext`) and what the stage
gives back to the cell (the adapter, the PRM, the RL questions) and to ``run.json`` (a few numbers).

Each adapter loads its stage lazily, so planning a run imports no model code.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrft.core.rundir import StageInputError
from openrft.pipeline.recipe import Recipe


@dataclass
class Cell:
    """One (task, training-set size) combination of a run; its stages live in ``<run>/<dir>/``."""

    id: str
    task: str
    data_size: int | None
    dir: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "data_size": self.data_size, "dir": self.dir, "stages": self.stages}


@dataclass
class CellContext:
    recipe: Recipe
    cell: Cell
    dir: Path
    train: list
    test: list
    examples_for: Callable | None = None
    show_progress: bool = True
    adapter: Path | None = None  # the latest policy adapter (SFT, then RL)
    model: str | None = None  # a fully fine-tuned model replacing the recipe's (SFT with full: true)
    train_samples: list = field(default_factory=list)  # what synthesis (and so SFT) and the PRM train on
    rl_train: list = field(default_factory=list)  # the original questions RL trains on (the cell's data size)
    rl_samples: list | None = None  # rl_train with its augmented variants once the augment stage has run
    prm: Path | None = None  # the PRM the prm stage trained

    def shots(self, stage: str) -> Callable | None:
        """The few-shot hook for ``stage``: the recipe's ICL, when it applies to that stage (``icl.stages``)."""
        icl = self.recipe.icl
        if self.examples_for is None or icl is None or (icl.stages is not None and stage not in icl.stages):
            return None
        return self.examples_for


def free_memory() -> None:
    """Between stages: collect garbage and return freed memory (CUDA's cache; on CPU the heap the allocator
    setting keeps, :func:`openrft.models.allocator.release_freed_memory`)."""
    from openrft.models.allocator import release_freed_memory

    gc.collect()
    release_freed_memory()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass


def _stage_augment(ctx: CellContext) -> dict[str, Any]:
    from openrft.augment.stage import TEMPLATE, drop_test_questions, run_augment
    from openrft.augment.stats import shortfall
    from openrft.models.backends import HTTPLimits, make_generator

    config = ctx.recipe.stage_config("augment")
    generator = teacher = None
    if config.k > 0 and config.backend != TEMPLATE:
        generator = make_generator(config.backend, config.model or ctx.recipe.model, base_url=config.base_url,
                                   dtype=ctx.recipe.dtype, cache_dir=str(ctx.dir / "augment" / "http-cache"),
                                   http=HTTPLimits.of(config))
        if config.teacher_check and (config.teacher_model or config.teacher_backend or config.teacher_base_url):
            teacher = make_generator(config.teacher_backend or config.backend, config.teacher_model or config.model,
                                     base_url=config.teacher_base_url or config.base_url, dtype=ctx.recipe.dtype,
                                     http=HTTPLimits.of(config))
    result = run_augment(ctx.train, generator, config, ctx.dir / "augment", teacher=teacher,
                         show_progress=ctx.show_progress)
    samples, leaked = drop_test_questions(result.samples, ctx.test)
    if ctx.recipe.pipeline_value("augment", "feed", "rl") == "all":
        ctx.train_samples = samples
    rl_ids = {s.id for s in ctx.rl_train}
    ctx.rl_samples = [s for s in samples if (s.meta or {}).get("parent_id", s.id) in rl_ids]
    short = shortfall(ctx.train, samples, config.expansion)  # after the test questions are dropped
    return {"samples": len(samples), "from": len(ctx.train), "variants_per_question":
            round((len(samples) - len(ctx.train)) / len(ctx.train), 3), "dropped_as_test_questions": leaked,
            "short_of_expansion": short["shortfall"], "questions_short": short["questions_short"]}


def _stage_synthesize(ctx: CellContext) -> dict[str, Any]:
    from openrft.synthesize.stage import build_generator, run_synthesize

    config = ctx.recipe.stage_config("synthesize")
    generator = None if config.source == "gold" else \
        build_generator(config, cache_dir=ctx.dir / "synthesize" / "http-cache", dtype=ctx.recipe.dtype)
    result = run_synthesize(ctx.train_samples, generator, config, ctx.dir / "synthesize",
                            examples_for=ctx.shots("synthesize"), show_progress=ctx.show_progress)
    _show_traces_in_shots(ctx, ctx.dir / "synthesize")
    solved = sum(1 for r in result.records if not r.get("fallback") and r.get("traces"))
    return {"questions": len(result.records), "solved": solved}


def _show_traces_in_shots(ctx: CellContext, traces: Path) -> None:
    """From here on, few-shot examples without a worked solution of their own show their question's correct
    synthesized trace (synthesis itself could not: it is what finds them)."""
    if ctx.examples_for is not None and hasattr(ctx.examples_for, "with_traces"):
        from openrft.synthesize.stage import verified_traces

        ctx.examples_for = ctx.examples_for.with_traces(verified_traces(traces))


def _stage_sft(ctx: CellContext) -> dict[str, Any]:
    from openrft.sft.stage import run_sft
    from openrft.synthesize.stage import TRACES

    config = ctx.recipe.stage_config("sft")
    traces = ctx.recipe.pipeline_value("sft", "traces")
    if traces is None:
        traces = ctx.dir / "synthesize" / TRACES
        if not traces.is_file():
            raise StageInputError(f"sft needs {traces}, which the synthesize stage writes; it is missing "
                                  "(was the synthesize stage interrupted? rerun to continue it)")
    else:
        _show_traces_in_shots(ctx, Path(traces))
    result = run_sft(traces, ctx.dir / "sft", config, examples_for=ctx.shots("sft"), show_progress=ctx.show_progress)
    if config.full:  # the fine-tuned model replaces the base for the stages after
        ctx.model, ctx.adapter = str(result.weights_dir), None
    else:
        ctx.adapter = Path(result.weights_dir)
    return {"loss_before": result.loss_before, "loss_after": result.loss_after}


def _stage_prm(ctx: CellContext) -> dict[str, Any]:
    from openrft.reward_models.prm_stage import run_prm_stage

    config = ctx.recipe.stage_config("prm")
    result = run_prm_stage(config, ctx.train_samples, ctx.dir / "prm", policy_model=ctx.model or ctx.recipe.model,
                           policy_adapter=ctx.adapter, quality_samples=ctx.test, examples_for=ctx.shots("prm"),
                           show_progress=ctx.show_progress)
    ctx.prm = result.out_dir
    held = result.metrics.get("held_out") or {}
    info = {"solutions": result.labels.get("solutions"), "good_steps": result.labels.get("good_step_fraction"),
            "held_out_auc": held.get("auc")}
    if result.quality:
        info["quality_auc"] = result.quality["scorers"]["trained"]["steps"]["auc"]
    return info


def _prm_path(ctx: CellContext, who: str) -> str:
    """The checkpoint of this cell's prm stage, for ``prm: stage`` in ``who``."""
    from openrft.rewards.prm.value_head import CHECKPOINT_SUBDIR

    prm = ctx.prm or ctx.dir / "prm"
    if not (prm / CHECKPOINT_SUBDIR).is_dir():
        raise StageInputError(f"{who} uses the PRM of the prm stage, but {prm / CHECKPOINT_SUBDIR} does not exist "
                              "(was the prm stage interrupted? rerun to continue it)")
    return str(prm)


def _stage_rl(ctx: CellContext) -> dict[str, Any]:
    from openrft.rl.stage import run_rl

    adapter = ctx.recipe.pipeline_value("rl", "adapter")
    if adapter is None and ctx.adapter is not None:
        adapter = str(ctx.adapter)
    if adapter is not None and not Path(adapter).exists():
        raise StageInputError(f"rl starts from adapter {adapter}, which does not exist; the sft stage writes it "
                              f"({ctx.dir / 'sft' / 'adapter'})")
    config = ctx.recipe.stage_config("rl", adapter=adapter, output_dir=str(ctx.dir / "rl"),
                                     **({"model": ctx.model} if ctx.model else {}))
    from openrft.rewards.prm.loader import PRM_FROM_STAGE

    if config.reward.prm == PRM_FROM_STAGE:
        config.reward.prm = _prm_path(ctx, "rl.reward.prm")
    samples = ctx.rl_samples if ctx.rl_samples is not None else ctx.rl_train
    result = run_rl(config, ctx.dir / "rl", samples, examples_for=ctx.shots("rl"),
                    show_progress=ctx.show_progress)
    ctx.adapter = Path(result.adapter_dir)
    last = result.metrics[-1] if result.metrics else {}
    first = result.metrics[0] if result.metrics else {}
    return {"first_reward": first.get("reward"), "last_reward": last.get("reward")}


def _stage_eval(ctx: CellContext) -> dict[str, Any]:
    from openrft.evaluate.results import write_report
    from openrft.evaluate.runner import EvaluatedWeights, evaluate
    from openrft.models.backends import make_generator

    recipe = ctx.recipe
    config = recipe.stage_config("eval")
    from openrft.rewards.prm.loader import PRM_FROM_STAGE

    if config.rerank == f"prm:{PRM_FROM_STAGE}":
        config.rerank = f"prm:{_prm_path(ctx, 'eval.rerank')}"
    backend = recipe.pipeline_value("eval", "backend", "transformers")
    model = ctx.model or recipe.model
    generator = make_generator(backend, model, batch_size=recipe.pipeline_value("eval", "batch_size", 32),
                               dtype=recipe.dtype)
    adapter_dir = None
    if ctx.adapter is not None:
        from openrft.models.lora import load_adapter, resolve_adapter_dir

        if not hasattr(generator, "model"):
            raise StageInputError(f"eval with backend {backend!r} cannot apply the adapter {ctx.adapter}; "
                                  "use backend transformers")
        adapter_dir = resolve_adapter_dir(ctx.adapter)
        generator.model = load_adapter(generator.model, adapter_dir, merge=True)
    # the model's and adapter's bytes (a stacked RL adapter includes the SFT adapter it was trained on), not their
    # paths, are part of what is evaluated: new weights upstream mean a new evaluation
    model_name = EvaluatedWeights(model, str(adapter_dir) if adapter_dir else None, generator.precision)
    label = recipe.pipeline_value("eval", "label") or recipe.method
    result = evaluate(generator, ctx.test, config, ctx.dir / "eval", label=label, model_name=model_name,
                      examples_for=ctx.shots("eval"), show_progress=ctx.show_progress,
                      long_questions=recipe.long_questions)
    write_report([result], ctx.dir / "eval")
    return {"accuracy": result.average}


STAGES: dict[str, Callable[[CellContext], dict[str, Any]]] = {
    "augment": _stage_augment, "synthesize": _stage_synthesize, "sft": _stage_sft, "prm": _stage_prm,
    "rl": _stage_rl, "eval": _stage_eval,
}
