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

The pieces shared with the outcome reward model (:mod:`openrft.reward_models.orm_train`) live here too:
:class:`ValueHeadTrainSettings`, :func:`build_value_head_model`, :func:`train_value_head`,
:func:`binary_metrics`, :func:`split_by_group`.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from openrft.core.rundir import (
    JsonlStore, atomic_write_json, begin_stage, file_hash, finish_stage, path_fingerprint, stable_hash,
)
from openrft.reward_models.labels import (
    COMPLETIONS_FILE, FLAT_STEPS_FILE, STEP_LABELS_FILE, StepExample, hard_labels, label_policy_rollouts,
    read_step_examples, write_step_examples,
)
from openrft.rewards.prm.value_head import (
    CHECKPOINT_SUBDIR, DEFAULT_STEP_TOKEN, FORMAT_FILE, ValueHeadModel, ValueHeadPRM, encode_steps, pad_id_of,
    pad_right, values_at,
)

logger = logging.getLogger(__name__)

STAGE = "prm_train"
LABELS_DIR, LABELS_FILE = "labels", FLAT_STEPS_FILE
METRICS, METRICS_JSON = "metrics.jsonl", "metrics.json"
LABEL_MODES = ("hard", "soft")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class ValueHeadTrainSettings:
    """Backbone, LoRA and optimisation settings shared by ``prm train`` and ``orm train``."""

    model: str = _help("base model of the reward model: bundled name, local directory or hub id",
                       default="smollm2-135m")
    init_adapter: str | None = _help("LoRA adapter merged into the base before training (e.g. the SFT policy's: "
                                     "ReFT initialises its reward model from the SFT model)", default=None)
    full: bool = _help("full fine-tuning of the backbone instead of LoRA", default=False)
    lora_rank: int = _help("LoRA rank", default=8)
    lora_alpha: float = _help("LoRA alpha (update scaled by alpha / rank)", default=16.0)
    lora_dropout: float = _help("dropout on the LoRA input", default=0.0)
    target_modules: str = _help("LoRA targets: all-linear, attention, mlp, or comma-separated module names",
                                default="all-linear")
    learning_rate: float = _help("peak learning rate of the backbone (LoRA or full)", default=1e-4)
    head_learning_rate: float | None = _help("learning rate of the value head (default: 10x learning_rate; the "
                                             "head starts from random weights)", default=None)
    epochs: int = _help("passes over the training examples", default=2)
    batch_size: int = _help("examples (solutions) per optimizer step", default=8)
    max_length: int = _help("tokens per example; later steps of a longer solution are left out", default=1024)
    weight_decay: float = _help("AdamW weight decay", default=0.0)
    warmup_ratio: float = _help("fraction of the steps with a linear learning-rate warm-up (then linear decay)",
                                default=0.0)
    max_grad_norm: float = _help("gradient clipping norm", default=1.0)
    held_out: float = _help("fraction of the questions held out for metrics.json (all solutions of a question "
                            "stay together)", default=0.1)
    seed: int = _help("seed for the split, data order, LoRA and head init", default=0)
    dtype: str = _help("auto (fp32 on CPU; on CUDA a bf16 base for LoRA, fp32 for full, bf16 autocast), fp32, "
                       "bf16", default="auto")
    device: str | None = _help("cpu, cuda, cuda:1 ... (default: cuda when available)", default=None)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_length", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or (self.head_learning_rate is not None and self.head_learning_rate <= 0):
            raise ValueError("learning rates must be positive")
        if not 0.0 <= self.held_out < 1.0:
            raise ValueError(f"held_out must be in [0, 1), got {self.held_out}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)


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
        return {k: getattr(self, k) for k in ("data", "split", "limit", "policy", "adapter", "n_completions",
                                               "n_rollouts", "temperature", "max_new_tokens", "step_rule", "seed",
                                               "share_prefixes")} | {"policy": self.policy or self.model}


# ---------------------------------------------------------------------------- shared pieces
@dataclass
class Item:
    """One training example, encoded: token ids, the positions where values are read, targets there."""

    ids: list[int]
    positions: list[int]
    targets: list[float]
    group: str  # examples with the same group stay on the same side of the split (the question)


def split_by_group(items: Sequence[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """``(train, held_out)``: about ``fraction`` of the groups held out (at least one when ``fraction > 0``
    and there are two groups or more), chosen by a seeded shuffle."""
    groups = sorted({it.group for it in items})
    if fraction <= 0 or len(groups) < 2:
        return list(items), []
    random.Random(seed).shuffle(groups)
    n_held = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held = set(groups[:n_held])
    return [it for it in items if it.group not in held], [it for it in items if it.group in held]


def auc_score(scores: Sequence[float], labels: Sequence[float]) -> float | None:
    """Area under the ROC curve (ties count half); None when only one class is present.

    >>> auc_score([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if not n_pos or not n_neg:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their average
        rank_sum += avg_rank * sum(1 for _, y in pairs[i:j] if y)
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def binary_metrics(logits: Sequence[float], targets: Sequence[float], majority_class: int,
                   threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy of ``sigmoid(logit) >= 0.5`` against targets binarised at ``threshold``, the accuracy of always
    answering ``majority_class``, AUC, and the mean BCE loss against the (possibly soft) targets."""
    if not logits:
        return {"count": 0, "accuracy": None, "majority_baseline": None, "auc": None, "loss": None,
                "positive_fraction": None}
    y = [1 if t >= threshold else 0 for t in targets]
    pred = [1 if v >= 0 else 0 for v in logits]
    lt, tt = torch.tensor(list(logits), dtype=torch.float64), torch.tensor(list(targets), dtype=torch.float64)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(lt, tt).item()
    return {"count": len(y), "accuracy": sum(p == t for p, t in zip(pred, y)) / len(y),
            "majority_baseline": sum(t == majority_class for t in y) / len(y), "majority_class": majority_class,
            "auc": auc_score(list(logits), y), "loss": loss, "positive_fraction": sum(y) / len(y)}


def majority(items: Sequence[Item], threshold: float = 0.5) -> int:
    ys = [1 if t >= threshold else 0 for it in items for t in it.targets]
    return int(sum(ys) * 2 >= len(ys)) if ys else 1


def build_value_head_model(settings: ValueHeadTrainSettings):
    """``(ValueHeadModel, tokenizer)`` ready to train: base loaded (``init_adapter`` merged in), LoRA attached or
    all weights trainable, the head initialised from ``settings.seed``."""
    from transformers import set_seed

    from openrft.models.lora import LoraSettings, attach_lora, load_adapter
    from openrft.models.loading import default_device, load_model

    device = torch.device(settings.device) if settings.device else default_device()
    dtype: Any = settings.dtype
    if dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" and not settings.full else torch.float32
    set_seed(settings.seed)
    backbone, tokenizer = load_model(settings.model, dtype=dtype, device=device)
    if settings.init_adapter:
        backbone = load_adapter(backbone, settings.init_adapter).merge_and_unload()
    if settings.full:
        backbone.requires_grad_(True)
    else:
        backbone = attach_lora(backbone, LoraSettings(settings.lora_rank, settings.lora_alpha, settings.lora_dropout,
                                                      settings.target_modules))
    torch.manual_seed(settings.seed)
    model = ValueHeadModel(backbone, base_model=settings.model, init_adapter=settings.init_adapter)
    tokenizer.padding_side = "right"
    return model, tokenizer


def _batch_logits(model: ValueHeadModel, batch: Sequence[Item], pad_id: int, autocast: bool):
    ids, mask = pad_right([it.ids for it in batch], pad_id)
    device = model.device
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        values = model(ids.to(device), mask.to(device))
    rows = torch.tensor([r for r, it in enumerate(batch) for _ in it.positions], device=device)
    cols = torch.tensor([p for it in batch for p in it.positions], device=device)
    targets = torch.tensor([t for it in batch for t in it.targets], dtype=torch.float32, device=device)
    return values[rows, cols].float(), targets


def evaluate_items(model: ValueHeadModel, items: Sequence[Item], batch_size: int, pad_id: int) -> list[float]:
    """Flattened logits at every item's positions, in item order."""
    values = values_at(model, [it.ids for it in items], [it.positions for it in items], batch_size, pad_id)
    return [v for vals in values for v in vals]


def train_value_head(model: ValueHeadModel, items: Sequence[Item], settings: ValueHeadTrainSettings, pad_id: int,
                     metrics_path: str | os.PathLike | None = None, show_progress: bool = True,
                     desc: str = "train") -> dict[str, Any]:
    """AdamW on BCE-with-logits at the items' positions; one ``metrics.jsonl`` line per optimizer step.

    Returns ``{"steps", "first_loss", "last_loss", "seconds"}``.
    """
    if not items:
        raise ValueError("no training examples left (all held out or too long); add data or lower held_out")
    head = list(model.v_head.parameters())
    head_ids = {id(p) for p in head}
    body = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    head_lr = settings.head_learning_rate or 10 * settings.learning_rate
    optim = torch.optim.AdamW([{"params": body, "lr": settings.learning_rate},
                               {"params": head, "lr": head_lr, "weight_decay": 0.0}],
                              weight_decay=settings.weight_decay)
    per_epoch = math.ceil(len(items) / settings.batch_size)
    total = per_epoch * settings.epochs
    warmup = int(settings.warmup_ratio * total)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, schedule)
    store = JsonlStore(metrics_path, key="step") if metrics_path is not None else None
    if metrics_path is not None:
        Path(metrics_path).unlink(missing_ok=True)
    autocast = model.device.type == "cuda"
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True)
    rng = random.Random(settings.seed)
    order = list(range(len(items)))
    losses: list[float] = []
    step = 0
    t0 = time.perf_counter()
    model.train()
    try:
        for epoch in range(settings.epochs):
            rng.shuffle(order)
            for start in range(0, len(order), settings.batch_size):
                batch = [items[i] for i in order[start:start + settings.batch_size]]
                logits, targets = _batch_logits(model, batch, pad_id, autocast)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_([p for g in optim.param_groups for p in g["params"]],
                                                           settings.max_grad_norm)
                optim.step()
                scheduler.step()
                step += 1
                losses.append(loss.item())
                line = {"step": step, "epoch": round(epoch + (start + len(batch)) / len(order), 4),
                        "loss": losses[-1], "learning_rate": optim.param_groups[0]["lr"],
                        "grad_norm": float(grad_norm), "positions": len(targets)}
                if store is not None:
                    store.append([line])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.4f}")
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    return {"steps": step, "first_loss": losses[0], "last_loss": losses[-1],
            "seconds": round(time.perf_counter() - t0, 3)}


# ---------------------------------------------------------------------------- the PRM stage
@dataclass
class PRMTrainResult:
    out_dir: Path
    checkpoint_dir: Path
    skipped: bool
    metrics: dict[str, Any]
    stats: dict[str, Any]


def _policy_generator(config: PRMTrainConfig):
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.models.lora import load_model_with_adapter

    model, tokenizer = load_model_with_adapter(config.policy or config.model, config.adapter,
                                               device=config.device)
    return TransformersGenerator(model, tokenizer, batch_size=config.generation_batch_size)


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
    if config.adapter:
        inputs["adapter"] = path_fingerprint(config.adapter) or config.adapter
    manifest, finished = begin_stage(labels_dir, "prm_labels", config.label_fields(), inputs, seed=config.seed,
                                     resume_keys=[COMPLETIONS_FILE, STEP_LABELS_FILE])
    if finished and (labels_dir / LABELS_FILE).is_file():
        logger.info("prm: reusing the step labels in %s", labels_dir / LABELS_FILE)
        return read_step_examples(labels_dir / LABELS_FILE)
    generator = generator if generator is not None else _policy_generator(config)
    t0 = time.perf_counter()
    examples = label_policy_rollouts(
        generator, samples, labels_dir, n_completions=config.n_completions, n_rollouts=config.n_rollouts,
        step_rule=config.step_rule, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
        seed=config.seed, show_progress=show_progress, share_prefixes=config.share_prefixes)
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
        from openrft.reward_models.labels import load_champ

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
        items.append(Item(ids[:flags[keep - 1] + 1], flags[:keep], labels[:keep], e.question))
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
    if config.init_adapter:
        from openrft.models.lora import resolve_adapter_dir

        inputs["init_adapter"] = file_hash(resolve_adapter_dir(config.init_adapter))
    if path_fingerprint(config.model):
        inputs["model"] = path_fingerprint(config.model)
    # local inputs count by their bytes (inputs), not where they lie: a copy of this stage in another run
    # directory (openrft run --reuse) still matches
    settings = asdict(config) | {"labels": ["local"] * len(config.labels)}
    if config.init_adapter:
        settings["init_adapter"] = "local"
    if "model" in inputs:
        settings["model"] = "local"
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
