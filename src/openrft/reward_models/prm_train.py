"""``openrft prm train``: fit a value-head PRM on step labels (given, CHAMP, or estimated from rollouts).

The loss is binary cross-entropy with logits at each step's step token only (the positions
:func:`~openrft.rewards.prm.value_head.encode_steps` flags); LoRA on the backbone (rank 8)
by default, the value head always trained. Questions are split into train and held-out
sets (every solution of a question on the same side). The stage directory holds::

    labels/         steps.jsonl + manifest.json (--auto-label only; reused by a rerun), and the per-question
                    stores completions.jsonl, step_labels.jsonl that a killed labelling resumes from
    checkpoint/     the PRM (ValueHeadPRM.from_pretrained reads it, or the stage directory)
    metrics.jsonl   one line per optimizer step: step, epoch, loss, learning_rate, grad_norm
    metrics.json    held-out step accuracy (threshold 0.5), majority-class baseline, AUC, loss; before and after
    manifest.json   config, input hashes, versions; a finished matching run is skipped

What it shares with outcome reward model training (settings, model, training loop, held-out metrics) is
:mod:`openrft.reward_models.value_head_train`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from openrft.core.rundir import (
    atomic_write_json, begin_stage, file_hash, finish_stage, pin_local_inputs, stable_hash, without_legacy_values,
)
from openrft.reward_models.labels import (
    COMPLETIONS_FILE, FLAT_STEPS_FILE, STEP_LABELS_FILE, StepExample, hard_labels, label_policy_rollouts,
    read_step_examples, write_step_examples,
)
from openrft.reward_models.value_head_train import (
    METRICS, METRICS_JSON, Item, ValueHeadTrainSettings, _help, binary_metrics, build_value_head_model,
    evaluate_items, majority, split_by_group, train_value_head,
)
from openrft.rewards.prm.value_head import (
    CHECKPOINT_SUBDIR, DEFAULT_STEP_TOKEN, FORMAT_FILE, ValueHeadPRM, encode_steps, pad_id_of,
)

logger = logging.getLogger(__name__)

STAGE = "prm_train"
LABELS_DIR, LABELS_FILE = "labels", FLAT_STEPS_FILE
LABEL_MODES = ("hard", "soft")


@dataclass
class StepLabelSettings:
    """How a policy's own solutions are labelled Math-Shepherd style and how steps are laid out for the PRM:
    shared by ``openrft prm train --auto-label`` and the pipeline's ``prm`` stage."""

    n_completions: int = _help("policy completions per question to label", default=1)
    n_rollouts: int = _help("continuations sampled from each step prefix", default=4)
    temperature: float = _help("sampling temperature of completions and rollouts", default=0.7)
    max_new_tokens: int = _help("generation budget of completions and rollouts", default=512)
    generation_batch_size: int = _help("sequences decoded together while labelling", default=32)
    step_rule: str = _help("how solutions are split into steps (CHAMP, auto-labelling): newline, blank_line, "
                           "step_k, re:<regex>", default="newline")
    step_token: str = _help("text appended after each step; the PRM reads its score there (Skywork: newline)",
                            default=DEFAULT_STEP_TOKEN)
    label_mode: str = _help("hard: a label > 0 is 1 (Math-Shepherd HE); soft: train on the fraction itself",
                            default="hard")
    share_prefixes: bool = _help("roll out a step prefix that several replies to a question share once and give "
                                 "each the label (the same estimate, less decoding)", default=True)
    reply_continuations: bool = _help("count each labelled reply's own continuation after a step prefix as one more "
                                      "rollout of it (a free sample: lower-variance labels)", default=False)
    #: option values that reproduce the labelling from before the option existed (kept out of its identity)
    LEGACY: ClassVar[dict[str, Any]] = {"share_prefixes": False, "reply_continuations": False}

    def check_label_settings(self) -> None:
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode {self.label_mode!r} is unknown; valid: {', '.join(LABEL_MODES)}")
        if self.n_completions < 1:
            raise ValueError(f"n_completions must be >= 1 (policy completions labelled per question), got "
                             f"{self.n_completions}")
        if self.n_rollouts < 1:
            raise ValueError(f"n_rollouts must be >= 1 (continuations sampled from each step prefix to estimate "
                             f"its label), got {self.n_rollouts}")
        for name in ("max_new_tokens", "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 (labelling samples completions and rollouts), got "
                             f"{self.temperature}")
        from openrft.rewards.steps import step_rule

        step_rule(self.step_rule)  # validates the rule name / regex
        if not self.step_token:
            raise ValueError("step_token must be a non-empty string")


@dataclass
class PRMTrainConfig(ValueHeadTrainSettings, StepLabelSettings):
    """Settings of ``openrft prm train``: where the step labels come from, how steps are laid out, and training.

    >>> PRMTrainConfig(labels=["x.jsonl"]).lora_rank
    8
    >>> PRMTrainConfig()
    Traceback (most recent call last):
    ...
    ValueError: no step labels: give labels files (--labels), --champ, or --auto-label with --data
    """

    labels: list[str] = _help("JSONL files of {question, steps, labels} (labels in [0, 1], one per step)",
                              default_factory=list)
    champ: bool = _help("add CHAMP's first-wrong-step annotations (pip install champ-dataset; MIT)", default=False)
    auto_label: bool = _help("estimate labels Math-Shepherd style: sample policy completions for --data, then "
                             "n rollouts from each step", default=False)
    data: list[str] = _help("samples to auto-label: bundled names, files or directories", default_factory=list)
    split: str | None = _help("split of --data to use (bundled data: train/test)", default="train")
    limit: int | None = _help("use at most this many samples of each task of --data", default=None)
    policy: str | None = _help("policy that writes and continues solutions (default: --model)", default=None)
    adapter: str | None = _help("LoRA adapter of the policy (an 'openrft sft' output directory)", default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.labels = [str(p) for p in ([self.labels] if isinstance(self.labels, str) else self.labels or [])]
        self.data = [str(p) for p in ([self.data] if isinstance(self.data, str) else self.data or [])]
        if not (self.labels or self.champ or self.auto_label):
            raise ValueError("no step labels: give labels files (--labels), --champ, or --auto-label with --data")
        if self.auto_label and not self.data:
            raise ValueError("--auto-label needs --data (the samples whose solutions are labelled)")
        self.check_label_settings()

    def label_fields(self) -> dict[str, Any]:
        """The settings that decide what auto-labelling produces."""
        return without_legacy_values({k: getattr(self, k) for k in (
            "data", "split", "limit", "policy", "adapter", "n_completions", "n_rollouts", "temperature",
            "max_new_tokens", "step_rule", "seed", "share_prefixes", "reply_continuations")} | {
            "policy": self.policy or self.model},
            self.LEGACY)


# ---------------------------------------------------------------------------- the PRM stage
@dataclass
class PRMTrainResult:
    out_dir: Path
    checkpoint_dir: Path
    skipped: bool
    metrics: dict[str, Any]
    stats: dict[str, Any]


def auto_label(config: PRMTrainConfig, out_dir: str | os.PathLike, generator=None,
               show_progress: bool = True) -> list[StepExample]:
    """Math-Shepherd labels for ``config.data`` in ``<out_dir>/labels/``: reused when its manifest matches, resumed
    question by question after a kill (:func:`~openrft.reward_models.labels.label_policy_rollouts`)."""
    from openrft.data.loaders import load_sources

    labels_dir = Path(out_dir) / LABELS_DIR
    samples = load_sources(config.data, split=config.split, limit_per_task=config.limit)
    if not samples:
        raise ValueError(f"--data {config.data} holds no samples")
    inputs = {"samples": stable_hash([s.to_dict() for s in samples])}
    settings = config.label_fields()
    pin_local_inputs(settings, inputs, {"adapter": config.adapter, "policy": settings["policy"]})
    manifest, finished = begin_stage(labels_dir, "prm_labels", settings, inputs, seed=config.seed,
                                     resume_keys=[COMPLETIONS_FILE, STEP_LABELS_FILE])
    if finished and (labels_dir / LABELS_FILE).is_file():
        logger.info("prm: reusing the step labels in %s", labels_dir / LABELS_FILE)
        return read_step_examples(labels_dir / LABELS_FILE)
    if generator is None:
        from openrft.models.backends.hf import TransformersGenerator

        generator = TransformersGenerator.from_pretrained(config.policy or config.model, adapter=config.adapter,
                                                          device=config.device,
                                                          batch_size=config.generation_batch_size)
    t0 = time.perf_counter()
    examples = label_policy_rollouts(
        generator, samples, labels_dir, n_completions=config.n_completions, n_rollouts=config.n_rollouts,
        step_rule=config.step_rule, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
        seed=config.seed, show_progress=show_progress, share_prefixes=config.share_prefixes,
        reply_continuations=config.reply_continuations)
    if not examples:
        raise ValueError("auto-labelling produced no examples: every policy completion was empty")
    write_step_examples(labels_dir / LABELS_FILE, examples)
    steps = sum(len(e.steps) for e in examples)
    finish_stage(labels_dir, manifest, samples=len(samples), examples=len(examples), steps=steps,
                 positive_fraction=sum(x > 0 for e in examples for x in e.labels) / steps,
                 seconds=round(time.perf_counter() - t0, 2))
    return examples


def gather_step_examples(config: PRMTrainConfig, out_dir: str | os.PathLike, generator=None,
                         show_progress: bool = True) -> tuple[list[StepExample], dict[str, str]]:
    """Every example the config names, and content hashes of the sources."""
    examples: list[StepExample] = []
    inputs: dict[str, str] = {}
    if config.labels:
        examples += read_step_examples(config.labels)
        inputs["labels"] = stable_hash([file_hash(p) for p in config.labels])
    if config.champ:
        from openrft.reward_models.champ import load_champ

        champ = load_champ(step_rule=config.step_rule)
        examples += champ
        inputs["champ"] = stable_hash([e.to_dict() for e in champ])
    if config.auto_label:
        auto = auto_label(config, out_dir, generator, show_progress)
        examples += auto
        inputs["auto_labels"] = stable_hash([e.to_dict() for e in auto])
    return examples, inputs


def encode_step_examples(examples: Sequence[StepExample], tokenizer, step_token: str, max_length: int,
                         label_mode: str = "hard") -> tuple[list[Item], int]:
    """Encoded items (steps past ``max_length`` tokens dropped) and how many examples were dropped entirely."""
    items: list[Item] = []
    dropped = 0
    for e in examples:
        ids, flags = encode_steps(tokenizer, e.question, e.steps, step_token)
        labels = hard_labels(e.labels) if label_mode == "hard" else list(e.labels)
        keep = sum(1 for f in flags if f < max_length)
        if keep == 0:
            dropped += 1
            continue
        graded = e.meta.get("completion_correct") if keep == len(flags) else None
        items.append(Item(ids[:flags[keep - 1] + 1], flags[:keep], labels[:keep], e.question,
                          None if graded is None else bool(graded)))
    return items, dropped


def _checkpoint_present(out: Path) -> bool:
    return (out / CHECKPOINT_SUBDIR / FORMAT_FILE).is_file() and (out / METRICS_JSON).is_file()


def run_prm_train(config: PRMTrainConfig, out_dir: str | os.PathLike, *, generator=None,
                  show_progress: bool = True, log: Callable[[str], None] | None = None) -> PRMTrainResult:
    """Train (or skip, when a finished run with the same settings and labels exists) a value-head PRM."""
    import json

    out = Path(out_dir)
    examples, inputs = gather_step_examples(config, out, generator, show_progress)
    if not examples:
        raise ValueError("no step examples to train on")
    # local inputs count by their bytes (inputs), not where they lie: a copy of this stage in another run
    # directory (openrft run --reuse) still matches
    settings = config.identity() | {"labels": ["local"] * len(config.labels)}
    resolved = {}
    if config.init_adapter:
        from openrft.models.lora import resolve_adapter_dir

        resolved["init_adapter"] = resolve_adapter_dir(config.init_adapter)
    pin_local_inputs(settings, inputs, {"init_adapter": config.init_adapter, "model": config.model}, resolved)
    manifest, finished = begin_stage(out, STAGE, settings, inputs, seed=config.seed)
    if finished and _checkpoint_present(out):
        logger.info("prm: %s already finished with the same settings and labels; skipping", out)
        metrics = json.loads((out / METRICS_JSON).read_text(encoding="utf-8"))
        return PRMTrainResult(out, out / CHECKPOINT_SUBDIR, True, metrics, dict(manifest.stats))
    model, tokenizer = build_value_head_model(config)
    items, dropped = encode_step_examples(examples, tokenizer, config.step_token, config.max_length,
                                          config.label_mode)
    train, held = split_by_group(items, config.held_out, config.seed)
    pad_id = pad_id_of(tokenizer)
    majority_class = majority(train)
    held_targets = [t for it in held for t in it.targets]
    before = binary_metrics(evaluate_items(model, held, config.batch_size, pad_id), held_targets, majority_class)
    (log or logger.info)(f"prm: {len(train)} training solutions ({sum(len(i.targets) for i in train)} steps), "
                         f"{len(held)} held out ({len(held_targets)} steps); {dropped} dropped as too long")
    fit = train_value_head(model, train, config, pad_id, out / METRICS, show_progress, desc="prm train")
    after = binary_metrics(evaluate_items(model, held, config.batch_size, pad_id), held_targets, majority_class)
    prm = ValueHeadPRM(model, tokenizer, step_token=config.step_token, batch_size=config.batch_size)
    prm.save_pretrained(out / CHECKPOINT_SUBDIR)
    metrics = {
        "held_out": after, "held_out_before_training": before,
        "train": {"solutions": len(train), "steps": sum(len(i.targets) for i in train),
                  "positive_fraction": sum(t >= 0.5 for i in train for t in i.targets)
                  / max(1, sum(len(i.targets) for i in train))},
        "held_out_solutions": len(held), "dropped_too_long": dropped, "label_mode": config.label_mode,
        "target_rule": "label >= 0.5 after the label mode (hard: any correct rollout -> 1)",
        "train_seconds": fit["seconds"], "steps": fit["steps"], "first_loss": fit["first_loss"],
        "last_loss": fit["last_loss"],
    }
    atomic_write_json(out / METRICS_JSON, metrics)
    finish_stage(out, manifest, examples=len(examples), **{k: v for k, v in metrics.items()
                                                          if not isinstance(v, dict)},
                 held_out_accuracy=after["accuracy"], majority_baseline=after["majority_baseline"],
                 held_out_auc=after["auc"], device=str(model.device))
    return PRMTrainResult(out, out / CHECKPOINT_SUBDIR, False, metrics, dict(manifest.stats))
