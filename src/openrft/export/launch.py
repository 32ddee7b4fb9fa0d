"""The launch script an export writes: openrft's RL settings as the engine's own command line, and what it cannot take.

:class:`LaunchPlan` holds the RL settings (an :class:`~openrft.rl.config.RLConfig`: a recipe's ``rl``
stage, or ``openrft rl``'s defaults) and the notes on what the engine run will not get. The engines'
modules (:mod:`openrft.export.verl`, :mod:`openrft.export.openrlhf`) turn it into hydra overrides or
flags; :func:`launch_script` writes them as a bash script that finds its files next to itself, so the
export folder can be copied anywhere on the cluster.
"""

from __future__ import annotations

import math
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.export.common import ExportConfig, check_out_dir, load_splits, prompt_messages, write_text
from openrft.rewards.base import RewardSettings
from openrft.rl.config import RLConfig

__all__ = ["EngineSetup", "LaunchPlan", "Shell", "begin_export", "engine_model", "engine_setup", "epochs_for", "here",
           "launch_record", "launch_script", "note_lines", "plan_summary", "prompt_length", "readme_text",
           "reward_notes", "self_contained_lines", "write_executable"]

_ROUND = 64


class Shell(str):
    """A script value the shell expands (double-quoted): ``$HERE/...``, ``${N_GPUS:-8}``; other values are quoted
    literally."""


def here(name: str) -> Shell:
    """``name`` in the export folder, as the launch script finds it (next to itself)."""
    return Shell(f"$HERE/{name}")


@dataclass
class LaunchPlan:
    """The RL run an export launches: its settings, a name, the recipe it came from and what the engine will not get."""

    rl: RLConfig = field(default_factory=RLConfig)
    name: str = "openrft"
    recipe: str | None = None
    notes: list[str] = field(default_factory=list)


def begin_export(config: ExportConfig, out: str | os.PathLike[str], plan: LaunchPlan | None,
                 splits: dict[str, list[Sample]] | None
                 ) -> tuple[Path, LaunchPlan, dict[str, list[Sample]], dict[str, list[list[dict[str, str]]]]]:
    """``(folder, plan, splits, prompts)`` of an export: the folder checked (then created, once the samples loaded),
    ``openrft rl``'s settings when no plan is given, the samples loaded when none are given."""
    out_dir = check_out_dir(out, config.overwrite)
    splits = splits if splits is not None else load_splits(config)
    messages = prompt_messages(splits, config.icl_k)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir, plan or LaunchPlan(), splits, messages


@dataclass
class EngineSetup:
    """What the launch needs beyond the RL settings: the model the engine loads, the prompt length in its tokens
    (and how it was measured), the number of training prompts, the prompts per step (``prompts_per_step``, or all
    of them when fewer are exported) and every note on what the engine does not get."""

    model: str
    prompt_tokens: int
    prompt_how: str
    n_train: int
    batch: int
    notes: list[str]


def engine_setup(plan: LaunchPlan, model: str | None, prm_url: str | None,
                 prompts: Sequence[list[dict[str, str]]], n_train: int) -> EngineSetup:
    """The setup for ``plan``: ``model`` (the export's --model) or the RL model as the engine names it; the prompt
    length measured with the first of those two whose tokenizer loads here."""
    tokens, how = prompt_length([m for m in (model, plan.rl.model) if m], prompts)
    notes = [*plan.notes, *reward_notes(plan.rl.reward, prm_url)]
    if plan.rl.adapter:
        notes.append(f"rl.adapter: openrft merges {plan.rl.adapter} into the base before RL; merge it (peft's "
                     "merge_and_unload) and export again with --model <the merged folder>")
    batch = min(plan.rl.prompts_per_step, n_train)
    if batch < plan.rl.prompts_per_step:
        notes.append(f"rl.prompts_per_step is {plan.rl.prompts_per_step} but {n_train} training prompts are exported: "
                     f"each step takes {batch}")
    return EngineSetup(model or engine_model(plan.rl.model), tokens, how, n_train, batch, notes)


def engine_model(model: str) -> str:
    """What the engine loads for an openrft model name: a bundled name's hub id, a local path made absolute, else
    the name itself (a hub id)."""
    from openrft.models.loading import ALIASES, BUNDLED_MODELS

    key = ALIASES.get(model, model)
    if key in BUNDLED_MODELS:
        return BUNDLED_MODELS[key].hub_id
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _round_up(n: int) -> int:
    return max(_ROUND, math.ceil(n / _ROUND) * _ROUND)


def prompt_length(models: Sequence[str], prompts: Sequence[list[dict[str, str]]]) -> tuple[int, str]:
    """The longest prompt in tokens of the chat template of the first of ``models`` whose tokenizer loads here
    (generation prompt included), rounded up to a multiple of 64, and how it was measured. With none: an upper
    bound from characters (a token covers at least one), plus 64 per message for the template."""
    from openrft.models.loading import ModelNotFoundError, load_tokenizer

    for model in models:
        try:
            tok = load_tokenizer(model)
            longest = max(len(tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
                                  add_special_tokens=False)["input_ids"]) for p in prompts)
        except (ModelNotFoundError, OSError, ValueError):
            continue
        return _round_up(longest), f"longest prompt {longest} tokens with {model}'s chat template"
    longest = max(sum(len(m["content"]) + _ROUND for m in p) for p in prompts)
    return _round_up(longest), (f"an upper bound from characters ({longest}): no tokenizer of {' or '.join(models)} "
                                "loads here")


def epochs_for(steps: int, batch: int, n_train: int) -> int:
    """Passes over ``n_train`` prompts that hold ``steps`` batches of ``batch <= n_train`` prompts (an incomplete
    batch at the end of a pass is dropped).

    >>> epochs_for(100, 32, 800), epochs_for(300, 32, 1019)
    (4, 10)
    """
    return math.ceil(steps / (n_train // batch))


def reward_notes(reward: RewardSettings, prm_url: str | None) -> list[str]:
    """What of the RL reward an exported reward does not compute, each with what to do instead."""
    notes = []
    if reward.prm and not prm_url:
        notes.append(f"rl.reward.prm is {reward.prm!r}, but this export scores the outcome only: serve that PRM "
                     f"('openrft prm serve --prm {reward.prm} --host 0.0.0.0 --port 8765') and export again with "
                     "--prm-url http://<that host>:8765/score")
    if reward.dense:
        notes.append("rl.reward.dense: the engines' custom rewards take one score per response (placed on its last "
                     "token), so the engine gets alpha * outcome + (1 - alpha) * f(step scores) as one number")
    if reward.functions:
        notes.append(f"rl.reward.functions ({', '.join(reward.functions)}) are not part of the exported reward")
    return notes


def launch_script(engine: str, script: str, plan: LaunchPlan, command: Sequence[str], args: Sequence[tuple[str, Any]],
                  notes: Sequence[str] = (), extra: Sequence[str] = ()) -> str:
    """A bash script running ``command`` with ``args`` (``(flag or key=, value)``; a ``None`` value: the flag alone)
    and then the script's own arguments. :class:`Shell` values are double-quoted (the shell expands them), others
    quoted literally; a list value is several arguments (``nargs``)."""
    from openrft import __version__

    source = f"recipe {plan.recipe}" if plan.recipe else "openrft rl's default settings (no --recipe)"
    lines = ["#!/usr/bin/env bash",
             f"# {engine} launch of {plan.name}, written by openrft {__version__} on {time.strftime('%Y-%m-%d %H:%M')}",
             f"# from {source}.",
             f"# Run it where {engine} runs: bash {script} [more settings]. The data and reward files are found next",
             "# to it, so the folder can be copied anywhere (at the same path on every node).",
             *(f"# {line}" for line in extra)]
    if notes:
        lines += ["#", "# Not carried to the engine:", *(f"#   - {n}" for n in notes)]
    lines += ["set -euo pipefail", 'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"', " ".join(command) + " \\"]
    for key, value in args:
        if value is None:
            lines.append(f"    {key} \\")
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        quoted = " ".join(f'"{v}"' if isinstance(v, Shell) else shlex.quote(str(v)) for v in items)
        lines.append(f"    {key}{quoted} \\" if key.endswith("=") else f"    {key} {quoted} \\")
    lines.append('    "$@"')
    return "\n".join(lines) + "\n"


def write_executable(path: Path, text: str) -> Path:
    """:func:`~openrft.export.common.write_text`, then executable by whoever may read it."""
    write_text(path, text)
    path.chmod(path.stat().st_mode | (path.stat().st_mode & 0o444) >> 2)
    return path


def plan_summary(plan: LaunchPlan) -> str:
    """One line: where the settings come from and the main ones."""
    rl = plan.rl
    source = f"recipe {plan.recipe}" if plan.recipe else "openrft rl's defaults; --recipe takes a recipe's"
    return (f"{source}: {rl.estimator}, lr {rl.lr:g}, {rl.steps} steps x {rl.prompts_per_step} prompts x "
            f"{rl.n_samples} samples, temperature {rl.temperature:g}, KL {rl.kl_coef:g}, LoRA r={rl.lora_rank}")


def self_contained_lines() -> list[str]:
    from openrft import __version__

    return [f"Self-contained: the reward module and its grading package (openrft_grading_*/, copied from openrft "
            f"{__version__})", "import only Python's standard library: install nothing where the engine scores."]


def note_lines(notes: Sequence[str]) -> list[str]:
    return ["", "Not carried to the engine:", *(f"  - {n}" for n in notes)] if notes else []


def readme_text(engine: str, usage: str, limits: str) -> str:
    return (f"# openrft export for {engine}\n\n```\n{usage}```\n\n## What {engine} takes from openrft, and what it "
            f"cannot\n\n{limits}")


def launch_record(plan: LaunchPlan, setup: EngineSetup) -> dict[str, Any]:
    """The manifest's ``launch`` entry: where the settings came from, the model, the prompt length, the notes."""
    return {"recipe": plan.recipe, "name": plan.name, "model": setup.model, "prompt_tokens": setup.prompt_tokens,
            "prompt_length_from": setup.prompt_how, "rl": plan.rl.to_dict(), "not_carried": setup.notes}
