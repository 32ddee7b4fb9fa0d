"""``openrft export <engine> --recipe``: a recipe's RL stage and the samples it trains on, as the engine exports take them.

The samples are the ones ``openrft run`` hands its RL stage (:func:`~openrft.pipeline.runner.load_cell_data`
for every cell: the recipe's data, train/test splits, sizes, ``resplit`` and ``answer_type``); the RL
settings are the recipe's ``rl`` stage (:class:`~openrft.rl.config.RLConfig`); the exported reward takes
the stage's reward settings. What a run would add before RL (an SFT adapter, augmented questions, a PRM
it trains) does not exist before the run: each is named in the plan's notes, with what to do.
"""

from __future__ import annotations

import dataclasses

from typing import Any

from openrft.data.sample import Sample
from openrft.export.launch import LaunchPlan
from openrft.pipeline.recipe import Recipe, RecipeError
from openrft.pipeline.runner import load_cell_data, plan_cells

__all__ = ["recipe_export"]


def _notes(recipe: Recipe, icl_k: int) -> list[str]:
    """What a run of ``recipe`` gives its RL stage that an export made before the run cannot."""
    notes = []
    if "sft" in recipe.stages:
        notes.append(f"stages.sft: openrft's RL starts from the SFT adapter of the run (runs/{recipe.name}/<cell>/sft); "
                     "merge it into the base (peft's merge_and_unload) and export again with --model <merged folder>")
    if "augment" in recipe.stages:
        notes.append(f"stages.augment: the engine trains on the original questions; to train on the augmented ones, "
                     f"export runs/{recipe.name}/<cell>/augment/augmented.jsonl with --data")
    if icl_k and "synthesize" in recipe.stages:
        notes.append("icl: a run's shots show the worked solutions its synthesize stage found; the exported prompts' "
                     "shots show the dataset's own answers")
    if recipe.icl is not None and recipe.icl.embedder:
        notes.append(f"icl.embedder {recipe.icl.embedder}: the exported shots were retrieved with the bundled embedder")
    return notes


def recipe_export(recipe: Recipe) -> tuple[dict[str, Any], LaunchPlan, dict[str, list[Sample]]]:
    """``(ExportConfig values, launch plan, {"train": [...], "test": [...]})`` for ``recipe``."""
    if "rl" not in recipe.stages:
        raise RecipeError(f"recipe {recipe.name!r} has no rl stage (its stages: {', '.join(recipe.ordered_stages)}); "
                          "an engine export launches RL: use a recipe with one, or add it with --set rl={...}")
    rl = recipe.stage_config("rl")
    from openrft.rewards.prm.loader import PRM_FROM_STAGE

    if rl.reward.prm == PRM_FROM_STAGE:  # named for the notes: the checkpoint a run's prm stage writes
        rl.reward.prm = f"runs/{recipe.name}/<cell>/prm"
    splits: dict[str, list[Sample]] = {"train": [], "test": []}
    for cell in plan_cells(recipe):
        _, rl_train, test = load_cell_data(recipe, cell)
        splits["train"] += rl_train
        splits["test"] += test
    if rl.epochs is not None:  # the engines count steps: the recipe's epochs over the exported training prompts
        rl = dataclasses.replace(rl, steps=rl.resolved_steps(len(splits["train"])), epochs=None)
    icl = recipe.icl
    icl_k = icl.k if icl is not None and (icl.stages is None or "rl" in icl.stages) else 0
    values = {"data": list(recipe.data), "split": recipe.train_split, "test_split": recipe.test_split,
              "limit": recipe.train_size, "icl_k": icl_k, "alpha": rl.reward.alpha, "agg": rl.reward.agg,
              "step_rule": rl.reward.step_rule, "partial_credit": rl.reward.partial_credit,
              "score_answer_step": rl.reward.score_answer_step}
    plan = LaunchPlan(rl=rl, name=recipe.name, recipe=recipe.source, notes=_notes(recipe, icl_k))
    return values, plan, splits
