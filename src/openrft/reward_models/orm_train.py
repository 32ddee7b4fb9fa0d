"""Training outcome reward models (ReFT's reranker; the scorer is :class:`~openrft.rewards.orm.OutcomeRewardModel`).

Trained on completions sampled from the (SFT) policy
and graded by the task's own grader (the grader evaluation uses), or on a given JSONL of
``{question, completion, label}``. The checkpoint is a value-head checkpoint (see
:mod:`openrft.rewards.prm.value_head`) with ``prm_format.json`` format ``"orm"``.

``openrft orm train`` writes, under its stage directory::

    samples/        completions.jsonl + manifest.json  (sampled from --data; reused by a rerun)
    checkpoint/     the ORM (OutcomeRewardModel.from_pretrained reads it, or the stage directory)
    metrics.jsonl   one line per optimizer step
    metrics.json    held-out accuracy, majority baseline, AUC, and rerank@n on held-out questions
    manifest.json
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrft.data.jsonl import check_fields, read_records, write_records
from openrft.data.sample import Sample
from openrft.models.backends.base import Generator, SamplingParams
from openrft.core.rundir import (
    atomic_write_json, begin_stage, file_hash, finish_stage, stable_hash,
)
from openrft.reward_models.value_head_train import (
    METRICS, METRICS_JSON, Item, ValueHeadTrainSettings, _help, binary_metrics,
    build_value_head_model, evaluate_items, majority, split_by_group, train_value_head,
)
from openrft.rewards.orm import OutcomeRewardModel
from openrft.rewards.prm.value_head import CHECKPOINT_SUBDIR, FORMAT_FILE, pad_id_of

logger = logging.getLogger(__name__)

__all__ = ["ORMTrainConfig", "ORMTrainResult", "OutcomeExample", "read_outcome_examples", "run_orm_train",
           "sample_outcome_examples", "write_outcome_examples"]

STAGE = "orm_train"
SAMPLES_DIR, SAMPLES_FILE = "samples", "completions.jsonl"
_FIELDS = ("question", "completion", "label", "source", "meta")


@dataclass(frozen=True)
class OutcomeExample:
    """A question, one completion, and whether its final answer is right (1) or not (0)."""

    question: str
    completion: str
    label: float
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError("field 'question': missing or empty")
        if not isinstance(self.completion, str):
            raise ValueError(f"field 'completion': expected a string, got {type(self.completion).__name__}")
        if not isinstance(self.label, (int, float)) or not 0.0 <= float(self.label) <= 1.0:
            raise ValueError(f"field 'label': {self.label!r} is not a number in [0, 1] (1 = correct)")
        object.__setattr__(self, "label", float(self.label))

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "completion": self.completion, "label": self.label,
                "source": self.source, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OutcomeExample":
        check_fields(d, _FIELDS, ("question", "completion", "label"))
        return cls(d["question"], d["completion"], d["label"], d.get("source") or "", d.get("meta") or {})


def read_outcome_examples(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[OutcomeExample]:
    """Examples from JSONL files; a bad line raises :class:`DataError` naming ``file:line`` and the field."""
    return read_records(paths, OutcomeExample.from_dict, "outcome examples",
                        '{"question": ..., "completion": ..., "label": 0 or 1}')


def write_outcome_examples(path: str | os.PathLike, examples: Sequence[OutcomeExample]) -> Path:
    return write_records(path, examples)


def sample_outcome_examples(generator: Generator, samples: Sequence[Sample], n: int = 4, temperature: float = 0.7,
                            top_p: float = 1.0, max_new_tokens: int = 512, seed: int = 0,
                            examples_for: Callable[[Sample], Sequence[Sample]] | None = None,
                            show_progress: bool = False) -> list[OutcomeExample]:
    """``n`` completions per sample in one ``generate`` call, each labelled by its task's grader.

    ``question`` is ``task.render_question(sample)`` (options included), the text the ORM sees.
    """
    from openrft.reward_models.labels import _generate, _seed
    from openrft.tasks import grade_all
    from openrft.tasks import task_for

    tasks = {s.answer_type: task_for(s) for s in samples}
    chats = [tasks[s.answer_type].messages(s, examples_for(s) if examples_for else ()) for s in samples]
    params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            seed=_seed(seed, "orm"))
    outs = _generate(generator, chats, params, "orm completions", show_progress)
    flat = [(s, j, c) for s, comps in zip(samples, outs) for j, c in enumerate(list(comps)[:n])]
    grades = grade_all([s for s, _, _ in flat], [c.text or "" for _, _, c in flat], tasks)
    return [OutcomeExample(tasks[s.answer_type].render_question(s), c.text or "", g.score, source="policy",
                           meta={"sample_id": s.id, "completion_index": j, "extracted": g.extracted,
                                 "finish_reason": c.finish_reason})
            for (s, j, c), g in zip(flat, grades)]


# ---------------------------------------------------------------------------- the stage
@dataclass
class ORMTrainConfig(ValueHeadTrainSettings):
    """Settings of ``openrft orm train``: where labelled completions come from, and training.

    >>> ORMTrainConfig(data=["svamp"]).n
    4
    """

    labels: list[str] = _help("JSONL files of {question, completion, label} (label 1 = correct)",
                              default_factory=list)
    data: list[str] = _help("samples to draw completions for: bundled names, files or directories",
                            default_factory=list)
    split: str | None = _help("split of --data (bundled data: train/test)", default="train")
    limit: int | None = _help("use at most this many samples of each task of --data", default=None)
    policy: str | None = _help("model that writes the completions (default: --model)", default=None)
    adapter: str | None = _help("LoRA adapter of the policy (an 'openrft sft' output directory)", default=None)
    n: int = _help("completions sampled per question", default=4)
    temperature: float = _help("sampling temperature", default=0.7)
    top_p: float = _help("nucleus sampling mass", default=1.0)
    max_new_tokens: int = _help("generation budget per completion", default=512)
    generation_batch_size: int = _help("sequences decoded together while sampling", default=32)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.labels = [str(p) for p in ([self.labels] if isinstance(self.labels, str) else self.labels or [])]
        self.data = [str(p) for p in ([self.data] if isinstance(self.data, str) else self.data or [])]
        if not (self.labels or self.data):
            raise ValueError("no training data: give --data (completions are sampled and graded) or --labels")
        for name in ("n", "max_new_tokens", "generation_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def sample_fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("data", "split", "limit", "adapter", "n", "temperature", "top_p",
                                               "max_new_tokens", "seed")} | {"policy": self.policy or self.model}


@dataclass
class ORMTrainResult:
    out_dir: Path
    checkpoint_dir: Path
    skipped: bool
    metrics: dict[str, Any]
    stats: dict[str, Any]


def _sampled_examples(config: ORMTrainConfig, out: Path, generator, show_progress: bool) -> list[OutcomeExample]:
    from openrft.data.loaders import load_sources

    samples = load_sources(config.data, split=config.split, limit_per_task=config.limit)
    if not samples:
        raise ValueError(f"--data {config.data} holds no samples")
    sdir = out / SAMPLES_DIR
    manifest, finished = begin_stage(sdir, "orm_samples", config.sample_fields(),
                                     {"samples": stable_hash([s.to_dict() for s in samples])}, seed=config.seed)
    if finished and (sdir / SAMPLES_FILE).is_file():
        return read_outcome_examples(sdir / SAMPLES_FILE)
    if generator is None:
        from openrft.models.backends.hf import TransformersGenerator

        generator = TransformersGenerator.from_pretrained(config.policy or config.model, adapter=config.adapter,
                                                          device=config.device,
                                                          batch_size=config.generation_batch_size)
    t0 = time.perf_counter()
    examples = sample_outcome_examples(generator, samples, n=config.n, temperature=config.temperature,
                                       top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=config.seed,
                                       show_progress=show_progress)
    write_outcome_examples(sdir / SAMPLES_FILE, examples)
    finish_stage(sdir, manifest, samples=len(samples), completions=len(examples),
                 correct_fraction=sum(e.label for e in examples) / max(1, len(examples)),
                 seconds=round(time.perf_counter() - t0, 2))
    return examples


def rerank_metrics(items: Sequence[Item], logits: Sequence[float]) -> dict[str, Any]:
    """Per held-out question: is the top-scored completion right (rerank@n), vs the mean and best completion."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for it, v in zip(items, logits):
        groups.setdefault(it.group, []).append((v, it.targets[0]))
    if not groups:
        return {"questions": 0, "rerank_accuracy": None, "mean_accuracy": None, "oracle_accuracy": None}
    return {"questions": len(groups),
            "rerank_accuracy": sum(max(g, key=lambda p: p[0])[1] >= 0.5 for g in groups.values()) / len(groups),
            "mean_accuracy": sum(sum(y >= 0.5 for _, y in g) / len(g) for g in groups.values()) / len(groups),
            "oracle_accuracy": sum(any(y >= 0.5 for _, y in g) for g in groups.values()) / len(groups)}


def run_orm_train(config: ORMTrainConfig, out_dir: str | os.PathLike, *, generator=None,
                  show_progress: bool = True, log: Callable[[str], None] | None = None) -> ORMTrainResult:
    """Train (or skip, when a finished run with the same settings and data exists) an outcome reward model."""
    out = Path(out_dir)
    examples: list[OutcomeExample] = []
    inputs: dict[str, str] = {}
    if config.labels:
        examples += read_outcome_examples(config.labels)
        inputs |= {f"labels:{p}": file_hash(p) for p in config.labels}
    if config.data:
        sampled = _sampled_examples(config, out, generator, show_progress)
        examples += sampled
        inputs["sampled"] = stable_hash([e.to_dict() for e in sampled])
    manifest, finished = begin_stage(out, STAGE, config.identity(), inputs, seed=config.seed)
    if finished and (out / CHECKPOINT_SUBDIR / FORMAT_FILE).is_file() and (out / METRICS_JSON).is_file():
        logger.info("orm: %s already finished with the same settings and data; skipping", out)
        metrics = json.loads((out / METRICS_JSON).read_text(encoding="utf-8"))
        return ORMTrainResult(out, out / CHECKPOINT_SUBDIR, True, metrics, dict(manifest.stats))
    model, tokenizer = build_value_head_model(config)
    orm = OutcomeRewardModel(model, tokenizer, batch_size=config.batch_size)
    items: list[Item] = []
    dropped = 0
    for e in examples:
        ids = orm.encode(e.question, e.completion)
        if len(ids) > config.max_length:
            dropped += 1
            continue
        items.append(Item(ids, [len(ids) - 1], [e.label], e.question, outcome=e.label >= 0.5))
    train, held = split_by_group(items, config.held_out, config.seed)
    pad_id = pad_id_of(tokenizer)
    majority_class = majority(train)
    held_targets = [it.targets[0] for it in held]
    before_logits = evaluate_items(model, held, config.batch_size, pad_id)
    (log or logger.info)(f"orm: {len(train)} training completions, {len(held)} held out; {dropped} dropped as "
                         f"longer than {config.max_length} tokens")
    fit = train_value_head(model, train, config, pad_id, out / METRICS, show_progress, desc="orm train")
    after_logits = evaluate_items(model, held, config.batch_size, pad_id)
    orm.save_pretrained(out / CHECKPOINT_SUBDIR)
    metrics = {
        "held_out": binary_metrics(after_logits, held_targets, majority_class),
        "held_out_before_training": binary_metrics(before_logits, held_targets, majority_class),
        "rerank": rerank_metrics(held, after_logits),
        "train": {"completions": len(train), "correct_fraction": sum(it.targets[0] >= 0.5 for it in train)
                  / max(1, len(train))},
        "dropped_too_long": dropped, "train_seconds": fit["seconds"], "steps": fit["steps"],
        "first_loss": fit["first_loss"], "last_loss": fit["last_loss"],
    }
    atomic_write_json(out / METRICS_JSON, metrics)
    finish_stage(out, manifest, examples=len(examples), held_out_accuracy=metrics["held_out"]["accuracy"],
                 majority_baseline=metrics["held_out"]["majority_baseline"], held_out_auc=metrics["held_out"]["auc"],
                 steps=fit["steps"], train_seconds=fit["seconds"], device=str(model.device))
    return ORMTrainResult(out, out / CHECKPOINT_SUBDIR, False, metrics, dict(manifest.stats))
