"""Training a value head (and LoRA or all weights) on binary targets at chosen token positions.

Shared by the PRM (:mod:`openrft.reward_models.prm_train`: targets at each step's step token) and the ORM
(:mod:`openrft.reward_models.orm_train`: one target at the last token): the settings, the model, the training
loop (BCE with logits; one ``metrics.jsonl`` line per optimizer step), the held-out split by question and the
held-out metrics.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from openrft.core.rundir import JsonlStore, without_legacy_values
from openrft.rewards.prm.value_head import ValueHeadModel, pad_right, values_at

METRICS, METRICS_JSON = "metrics.jsonl", "metrics.json"


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
    rank_weight: float = _help(
        "weight of a within-question ranking term: batches then hold pairs of solutions to the same question (a "
        "right one with a wrong one where it has both), and for every right and wrong solution of a question in a "
        "batch the loss adds -log sigmoid(s_right - s_wrong), s = the solution's lowest step logit (how best-of-k "
        "reranking scores it); 0 = BCE alone, random batches",
        default=0.0)

    #: option values that train as before the option existed (kept out of the training identity)
    TRAIN_LEGACY: ClassVar[dict[str, Any]] = {"rank_weight": 0.0}

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
        if self.rank_weight < 0:
            raise ValueError(f"rank_weight must be >= 0, got {self.rank_weight}")

    def identity(self) -> dict[str, Any]:
        """The settings a trained model's stage is known by: all of them, less options at their ``TRAIN_LEGACY``
        value (so a model trained before an option existed keeps its identity)."""
        return without_legacy_values(asdict(self), self.TRAIN_LEGACY)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class Item:
    """One training example, encoded: token ids, the positions where values are read, targets there."""

    ids: list[int]
    positions: list[int]
    targets: list[float]
    group: str  # examples with the same group stay on the same side of the split (the question)
    outcome: bool | None = None  # the whole solution graded right (None: unknown, or steps cut by max_length)


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


def ranking_loss(logits: torch.Tensor, batch: Sequence[Item]) -> torch.Tensor | None:
    """Mean ``-log sigmoid(s_right - s_wrong)`` over the (right, wrong) pairs of solutions to the same question in
    ``batch``, ``s`` a solution's lowest step logit (``logits`` flattened in item order, as
    :func:`_batch_logits` gives them); None when the batch holds no such pair.

    >>> items = [Item([1], [0], [1.0], "q", True), Item([1], [0], [0.0], "q", False), Item([1], [0], [0.0], "p", False)]
    >>> round(float(ranking_loss(torch.tensor([2.0, 0.0, 5.0]), items)), 4)  # one pair: -log sigmoid(2)
    0.1269
    """
    scores = torch.stack([seg.min() for seg in logits.split([len(it.positions) for it in batch])])
    right = [i for i, it in enumerate(batch) if it.outcome is True]
    wrong = [i for i, it in enumerate(batch) if it.outcome is False]
    pairs = [(i, j) for i in right for j in wrong if batch[i].group == batch[j].group]
    if not pairs:
        return None
    i, j = (torch.tensor(x, device=logits.device) for x in zip(*pairs))
    return -torch.nn.functional.logsigmoid(scores[i] - scores[j]).mean()


def paired_order(items: Sequence[Item], rng: random.Random) -> list[int]:
    """Item indices in pairs of solutions to the same question, a right one with a wrong one where the question
    has both (the rest paired among themselves), the pairs in a shuffled order and the unpaired last: a batch of
    ``2m`` holds ``m`` pairs from about ``m`` questions, as varied as a random batch, each pair a ranking pair."""
    by_group: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_group.setdefault(it.group, []).append(i)
    pairs: list[list[int]] = []
    alone: list[int] = []
    for key in sorted(by_group):
        members = list(by_group[key])
        rng.shuffle(members)
        right = [i for i in members if items[i].outcome is True]
        wrong = [i for i in members if items[i].outcome is False]
        while right and wrong:
            pairs.append([right.pop(), wrong.pop()])
        rest = right + wrong + [i for i in members if items[i].outcome is None]
        pairs += [rest[k:k + 2] for k in range(0, len(rest) - 1, 2)]
        alone += rest[len(rest) - len(rest) % 2:]
    rng.shuffle(pairs)
    rng.shuffle(alone)
    return [i for pair in pairs for i in pair] + alone


def evaluate_items(model: ValueHeadModel, items: Sequence[Item], batch_size: int, pad_id: int) -> list[float]:
    """Flattened logits at every item's positions, in item order."""
    values = values_at(model, [it.ids for it in items], [it.positions for it in items], batch_size, pad_id)
    return [v for vals in values for v in vals]


def train_value_head(model: ValueHeadModel, items: Sequence[Item], settings: ValueHeadTrainSettings, pad_id: int,
                     metrics_path: str | os.PathLike | None = None, show_progress: bool = True,
                     desc: str = "train") -> dict[str, Any]:
    """AdamW on BCE-with-logits at the items' positions (plus ``rank_weight`` x :func:`ranking_loss` over batches
    of :func:`paired_order`); one ``metrics.jsonl`` line per optimizer step.

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
            if settings.rank_weight > 0:
                order = paired_order(items, rng)
            else:
                rng.shuffle(order)
            for start in range(0, len(order), settings.batch_size):
                batch = [items[i] for i in order[start:start + settings.batch_size]]
                logits, targets = _batch_logits(model, batch, pad_id, autocast)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
                rank = ranking_loss(logits, batch) if settings.rank_weight > 0 else None
                if rank is not None:
                    loss = loss + settings.rank_weight * rank
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
                if rank is not None:
                    line["rank_loss"] = float(rank.detach())
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
