"""The SFT warm-up stage (OpenRFT 2.2.1; ReFT's warm-up): trl's SFTTrainer on synthesized traces.

Loss on the completion only (the prompt is masked to -100), LoRA by default (rank 4,
lr 5e-5, 8 epochs, batch 8, max length 2048, as in the paper) or full fine-tuning. Writes,
under the stage directory::

    adapter/        LoRA adapter + tokenizer      (model/ under full fine-tuning)
    merged/         base model with the adapter folded in (when merge=True)
    metrics.jsonl   one line per logging step: step, epoch, loss, learning_rate, grad_norm, ...
    checkpoints/    Trainer checkpoints while running; a rerun resumes from the last complete one
    manifest.json   config, input hashes, versions, timings; a finished matching run is skipped
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from openrft.models.lora import LoraSettings, attach_lora, save_atomic, trainable_parameters
from openrft.core.rundir import JsonlStore, Manifest, begin_stage, file_hash, finish_stage, stable_hash
from openrft.core.tracking import Trackers, check_installed, parse_report_to
from openrft.sft.dataset import ExamplesFor, LoadReport, load_sft_examples, to_rows, tokenize_prompt_completion

logger = logging.getLogger(__name__)

STAGE = "sft"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
ADAPTER, FULL_MODEL, MERGED = "adapter", "model", "merged"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

#: examples per forward/backward on CPU: on the multistep traces, a batch of 16 in micro-batches of 2 trained 1.48x
#: faster than whole (less padding) and peaked at 2.6 GB instead of 12 (bench/README.md, "SFT in micro-batches")
CPU_MICRO_BATCH = 2


@dataclass
class SFTStageConfig:
    """Settings of the SFT stage. Defaults follow OpenRFT's SFT warm-up.

    >>> SFTStageConfig().lora
    LoraSettings(rank=4, alpha=8.0, dropout=0.05, target_modules='all-linear')
    >>> SFTStageConfig(full=True, merge=True)
    Traceback (most recent call last):
    ...
    ValueError: merge applies to LoRA; full fine-tuning already writes the whole model to <out>/model
    """

    model: str = field(default="smollm2-135m", metadata={"help": "base model: bundled name, local directory or hub id"})
    full: bool = field(default=False, metadata={"help": "full fine-tuning instead of LoRA"})
    lora_rank: int = field(default=4, metadata={"help": "LoRA rank (OpenRFT: 4)"})
    lora_alpha: float = field(default=8.0, metadata={"help": "LoRA alpha (update scaled by alpha / rank)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: str = field(default="all-linear", metadata={
        "help": "LoRA targets: all-linear, attention (q/k/v/o), mlp, or comma-separated module names"})
    epochs: float = field(default=8.0, metadata={"help": "training epochs (OpenRFT: 8)"})
    learning_rate: float = field(default=5e-5, metadata={"help": "peak learning rate (OpenRFT: 5e-5)"})
    batch_size: int = field(default=8, metadata={"help": "examples per optimizer step and device (OpenRFT: 8)"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    micro_batch_size: int | None = field(default=None, metadata={
        "help": "examples per forward/backward: each batch runs in micro-batches (the largest divisor of batch_size "
                "up to this) with their gradients accumulated, weighted by tokens as the whole batch would be, so "
                "the optimizer takes the same steps (to float rounding and LoRA dropout draws); fewer padded tokens "
                "and far less memory (default: 2 on CPU, batch_size on CUDA); not part of the stage's identity"})
    max_length: int = field(default=2048, metadata={"help": "tokens per example (prompt + trace); longer ones are cut"})
    lr_scheduler: str = field(default="linear", metadata={"help": "transformers scheduler name (linear, cosine, constant, ...)"})
    warmup_ratio: float = field(default=0.0, metadata={"help": "fraction of steps for linear warm-up"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    include_fallback: bool = field(default=True, metadata={
        "help": "train on fallback records too (bare answers where no sampled trace was correct)"})
    max_traces_per_sample: int | None = field(default=None, metadata={
        "help": "use at most this many distinct traces per sample (default: all)"})
    seed: int = field(default=0, metadata={"help": "seed for LoRA init, data order and dropout"})
    logging_steps: int = field(default=1, metadata={"help": "optimizer steps between metrics.jsonl lines"})
    save_steps: int | None = field(default=None, metadata={
        "help": "optimizer steps between resumable checkpoints (default: one per epoch)"})
    keep_checkpoints: bool = field(default=False, metadata={"help": "keep checkpoints/ after a finished run"})
    merge: bool = field(default=False, metadata={"help": "also write the base model with the adapter merged into merged/"})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "recompute activations in backward: far less memory, about a fifth slower (default: on with CUDA, "
                "where long traces would not fit otherwise; off on CPU)"})
    dtype: str = field(default="auto", metadata={
        "help": "weights dtype: auto = fp32 on CPU; on CUDA bf16 base for LoRA, fp32 master weights for full "
                "(both with bf16 autocast)"})
    report_to: list[str] | None = field(default=None, metadata={
        "help": "where metrics go besides metrics.jsonl, as trl's report_to: tensorboard, wandb, mlflow or none, "
                "comma-separated or repeated (default: none); not part of the stage's identity"})
    measure_loss: bool = field(default=True, metadata={
        "help": "measure the mean completion loss over the training data before and after training"})

    def __post_init__(self) -> None:
        self.report_to = parse_report_to(self.report_to)
        if self.full and self.merge:
            raise ValueError("merge applies to LoRA; full fine-tuning already writes the whole model to <out>/model")
        for name in ("batch_size", "grad_accum", "max_length", "logging_steps", "micro_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise ValueError(f"epochs and learning_rate must be positive, got {self.epochs} and {self.learning_rate}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.save_steps is not None and self.save_steps < 1:
            raise ValueError(f"save_steps must be >= 1 or None (once per epoch), got {self.save_steps}")
        if not self.full:
            LoraSettings(self.lora_rank, self.lora_alpha, self.lora_dropout, self.target_modules)  # validates

    @property
    def lora(self) -> LoraSettings:
        return LoraSettings(self.lora_rank, self.lora_alpha, self.lora_dropout, self.target_modules)

    def settings(self) -> dict[str, Any]:
        """The settings that make the stage's identity. Metric destinations are not among them: ``report_to``
        keeps the value it had in every identity before destinations left it (``"none"``, its old default), so
        earlier runs keep theirs; nor is how a batch is split into micro-batches (the same steps)."""
        settings = asdict(self) | {"report_to": "none"}
        del settings["micro_batch_size"]
        return settings

    def micro_batches(self, cuda: bool) -> tuple[int, int]:
        """``(examples per forward, micro-batches per optimizer step)``: the batch split into equal micro-batches
        of at most ``micro_batch_size`` (default :data:`CPU_MICRO_BATCH` on CPU, the whole batch on CUDA).

        >>> SFTStageConfig(batch_size=16).micro_batches(cuda=False), SFTStageConfig(batch_size=16).micro_batches(True)
        ((2, 8), (16, 1))
        >>> SFTStageConfig(batch_size=12, grad_accum=2, micro_batch_size=5).micro_batches(cuda=False)
        (4, 6)
        """
        most = self.micro_batch_size or (self.batch_size if cuda else CPU_MICRO_BATCH)
        size = max(d for d in range(1, min(most, self.batch_size) + 1) if self.batch_size % d == 0)
        return size, self.grad_accum * (self.batch_size // size)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SFTStageConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown sft settings {sorted(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class SFTResult:
    """What the stage produced; ``skipped`` when a finished run with the same config and inputs was found."""

    out_dir: Path
    weights_dir: Path  # adapter/ (LoRA) or model/ (full)
    merged_dir: Path | None
    skipped: bool
    steps: int
    examples: int
    losses: list[tuple[int, float]]  # (step, training loss) per logging step
    loss_before: float | None
    loss_after: float | None
    stats: dict[str, Any]

    @property
    def first_loss(self) -> float | None:
        return self.losses[0][1] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1][1] if self.losses else None


@torch.no_grad()
def completion_loss(model, tokenizer, rows: Sequence[dict], batch_size: int = 8, max_length: int | None = None,
                    max_logits: int = 1 << 27) -> float:
    """Mean next-token loss over the completion tokens of ``rows`` (token-weighted, like the trainer's loss).

    Sequences are padded on the left so that every completion ends at the last position,
    and only the last ``longest completion + 1`` positions get logits; batches shrink so
    that at most ``max_logits`` logit values exist at once (long traces, large vocabularies).
    Batches take the rows in order of length, so each pads little.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [tokenize_prompt_completion(tokenizer, r["prompt"], r["completion"], max_length) for r in rows]
    encoded = sorted(((ids, labels, sum(x != -100 for x in labels)) for ids, labels in encoded),
                     key=lambda e: len(e[0]))
    total, count, start = 0.0, 0, 0
    try:
        while start < len(encoded):
            chunk = [encoded[start]]
            while (start + len(chunk) < len(encoded) and len(chunk) < batch_size
                   and (len(chunk) + 1) * (max(c[2] for c in chunk + [encoded[start + len(chunk)]]) + 1) * vocab
                   <= max_logits):
                chunk.append(encoded[start + len(chunk)])
            start += len(chunk)
            width = max(len(ids) for ids, _, _ in chunk)
            keep = max(n for _, _, n in chunk) + 1
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (x, y, _) in enumerate(chunk):
                ids[i, width - len(x):], labels[i, width - len(y):], mask[i, width - len(x):] = \
                    torch.tensor(x), torch.tensor(y), 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           position_ids=positions.to(device), logits_to_keep=min(keep, width)).logits
            target = labels[:, width - logits.size(1) + 1:].to(device)
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.size(-1)),
                                                    target.reshape(-1), ignore_index=-100, reduction="sum")
            total += nll.item()
            count += int((target != -100).sum())
    finally:
        model.train(was_training)
    return total / max(count, 1)


def last_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest complete Trainer checkpoint (one whose trainer_state.json, written last, exists)."""
    if not ckpt_dir.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _CHECKPOINT_RE.match(p.name))),
                   reverse=True)
    for _, p in found:
        if (p / "trainer_state.json").is_file():
            return p
        logger.warning("ignoring incomplete checkpoint %s (killed while saving)", p)
        shutil.rmtree(p, ignore_errors=True)
    return None


def _metrics_callback(path: Path, trackers: Trackers | None):
    from transformers import TrainerCallback

    class MetricsToJsonl(TrainerCallback):
        """Appends one metrics.jsonl line per logging step that carries a training loss, and sends it to the
        stage's ``report_to`` destinations."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.is_world_process_zero:
                return
            line = {"step": state.global_step}
            line.update({k: v for k, v in logs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
            JsonlStore(path, key="step").append([line])
            if trackers is not None:
                trackers.log(line, state.global_step)

    return MetricsToJsonl()


def read_losses(out_dir: str | os.PathLike) -> list[tuple[int, float]]:
    """``(step, loss)`` pairs from a stage's metrics.jsonl, in step order."""
    recs = JsonlStore(Path(out_dir) / METRICS, key="step").load()
    return sorted((int(r["step"]), float(r["loss"])) for r in recs.values() if "loss" in r)


def _prepare_metrics(path: Path, resume_step: int | None) -> None:
    """Start metrics.jsonl afresh, or keep only the lines up to the checkpoint being resumed from."""
    if resume_step is None:
        path.unlink(missing_ok=True)
        return
    store = JsonlStore(path, key="step")
    store.rewrite(r for r in store.load().values() if int(r["step"]) <= resume_step)


def _outputs_present(out: Path, config: SFTStageConfig) -> bool:
    weights = out / (FULL_MODEL if config.full else ADAPTER)
    ok = (weights / ("config.json" if config.full else "adapter_config.json")).is_file()
    return ok and (not config.merge or (out / MERGED / "config.json").is_file())


def _result(out: Path, config: SFTStageConfig, manifest: Manifest, skipped: bool) -> SFTResult:
    s = manifest.stats
    return SFTResult(out_dir=out, weights_dir=out / (FULL_MODEL if config.full else ADAPTER),
                     merged_dir=out / MERGED if config.merge else None, skipped=skipped, steps=s.get("steps", 0),
                     examples=s.get("examples", 0), losses=read_losses(out), loss_before=s.get("loss_before"),
                     loss_after=s.get("loss_after"), stats=dict(s))


def load_for_training(config: SFTStageConfig):
    """``(model, tokenizer)`` ready to train: LoRA attached (seeded init, ``lora_B`` = 0) or all weights trainable."""
    from transformers import set_seed

    from openrft.models.loading import load_model

    dtype = config.dtype
    if dtype == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_available() and not config.full else torch.float32
    set_seed(config.seed)
    model, tokenizer = load_model(config.model, dtype=dtype)
    if config.full:
        return model.requires_grad_(True), tokenizer
    return attach_lora(model, config.lora), tokenizer


def make_trainer(model, tokenizer, rows: Sequence[dict], config: SFTStageConfig, out_dir: str | os.PathLike,
                 callbacks: Sequence[Any] = (), show_progress: bool = True, trackers: Trackers | None = None):
    """A trl ``SFTTrainer`` on conversational prompt-completion ``rows``, loss on the completion only,
    checkpoints in ``<out_dir>/checkpoints``, loss per logging step appended to ``<out_dir>/metrics.jsonl`` and
    sent to ``trackers`` (:func:`run_sft` opens them from ``config.report_to``)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    out = Path(out_dir)
    cuda = torch.cuda.is_available()
    checkpointing = cuda if config.gradient_checkpointing is None else config.gradient_checkpointing
    micro, accumulate = config.micro_batches(cuda)
    args = SFTConfig(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=accumulate,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a fraction of the total steps
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        max_length=config.max_length,
        completion_only_loss=True,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        bf16=cuda,  # autocast on CUDA; CPU trains in fp32
        fp16=False,
        use_cpu=not cuda,
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        report_to="none",  # destinations get the metrics.jsonl lines (openrft.core.tracking), as in RL
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
    )
    import datasets
    from transformers import PrinterCallback

    bars_were_on = datasets.is_progress_bar_enabled()
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(list(rows)),
                             processing_class=tokenizer,
                             callbacks=[_metrics_callback(out / METRICS, trackers), *callbacks])
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    if not show_progress:
        trainer.remove_callback(PrinterCallback)  # without a progress bar the Trainer prints every log dict
    return trainer


def _train(model, tokenizer, rows: Sequence[dict], config: SFTStageConfig, out: Path, resume: Path | None,
           callbacks: Sequence[Any], show_progress: bool):
    """Train (from checkpoint ``resume`` when given) with the metrics also sent to ``config.report_to`` (by the
    first process only, under torchrun or accelerate): ``(trainer, train output, seconds)``."""
    main = int(os.environ.get("RANK", "0")) == 0
    trackers = Trackers((config.report_to or []) if main else [], out, stage=STAGE, config=asdict(config))
    try:
        trainer = make_trainer(model, tokenizer, rows, config, out, callbacks, show_progress, trackers)
        if resume is not None:
            logger.info("sft: resuming from %s", resume)
        t0 = time.perf_counter()
        train_out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        return trainer, train_out, time.perf_counter() - t0
    finally:
        trackers.close()


def run_sft(
    traces_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: SFTStageConfig | None = None,
    *,
    examples_for: ExamplesFor | None = None,
    callbacks: Sequence[Any] = (),
    show_progress: bool = True,
) -> SFTResult:
    """Run (or skip, or resume) the SFT stage on ``traces_path`` into ``out_dir``.

    ``examples_for(sample) -> list[Sample]`` adds few-shot examples to each prompt (ICL),
    exactly as the other stages do. ``callbacks`` are extra ``transformers.TrainerCallback`` s.
    A finished run with the same config and inputs is skipped; an interrupted one resumes
    from its last complete checkpoint.
    """
    config = config or SFTStageConfig()
    check_installed(config.report_to or [])  # before any model loads
    out = Path(out_dir)
    report = LoadReport()
    examples = load_sft_examples(traces_path, config.include_fallback,
                                 max_traces_per_sample=config.max_traces_per_sample, report=report)
    rows = to_rows(examples, examples_for)
    inputs = {"traces": file_hash(report.path), "data": stable_hash(rows)}
    manifest, finished = begin_stage(out, STAGE, config.settings(), inputs, seed=config.seed,
                                     resume_keys=[CHECKPOINTS])
    if finished:
        if _outputs_present(out, config):
            logger.info("sft: %s already finished with the same config and inputs; skipping", out)
            return _result(out, config, manifest, skipped=True)
        logger.warning("sft: %s is marked finished but its outputs are missing; training again", out)
        (out / "manifest.json").unlink()
        manifest, _ = begin_stage(out, STAGE, config.settings(), inputs, seed=config.seed, resume_keys=[CHECKPOINTS])

    model, tokenizer = load_for_training(config)
    trainable, total = trainable_parameters(model)
    logger.info("sft: %d examples from %s; training %s of %s parameters (%s)", len(examples), report.path,
                f"{trainable:,}", f"{total:,}", "full" if config.full else f"LoRA r={config.lora_rank}")
    measure = config.measure_loss
    loss_before = completion_loss(model, tokenizer, rows, config.batch_size, config.max_length) if measure else None
    ckpt_dir = out / CHECKPOINTS
    resume = last_checkpoint(ckpt_dir)
    resume_step = int(_CHECKPOINT_RE.match(resume.name).group(1)) if resume else None
    _prepare_metrics(out / METRICS, resume_step)
    trainer, train_out, seconds = _train(model, tokenizer, rows, config, out, resume, callbacks, show_progress)
    model = trainer.model
    loss_after = completion_loss(model, tokenizer, rows, config.batch_size, config.max_length) if measure else None

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    weights_dir = save_atomic(save, out / (FULL_MODEL if config.full else ADAPTER))
    if config.merge:
        from openrft.models.lora import merge_and_save

        merge_and_save(model, out / MERGED, tokenizer)
    if not config.keep_checkpoints:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    losses = read_losses(out)
    finish_stage(
        out, manifest, steps=trainer.state.global_step,
        steps_per_epoch=math.ceil(len(examples) / (config.batch_size * config.grad_accum)),
        fallback_examples=sum(e.fallback for e in examples), **report.as_stats(),
        first_loss=losses[0][1] if losses else None, last_loss=losses[-1][1] if losses else None,
        loss_before=loss_before, loss_after=loss_after, train_seconds=round(seconds, 2),
        train_samples_per_second=train_out.metrics.get("train_samples_per_second"),
        resumed_from_step=resume_step, trainable_params=trainable, total_params=total,
        device=str(next(model.parameters()).device), weights=str(weights_dir),
    )
    logger.info("sft: done in %.1fs; loss %s -> %s; weights in %s", seconds, losses[0][1] if losses else None,
                losses[-1][1] if losses else None, weights_dir)
    return _result(out, config, manifest, skipped=False)
