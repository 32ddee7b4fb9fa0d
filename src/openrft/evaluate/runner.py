"""Evaluation: sample n completions per item, grade them, aggregate per task.

Items are generated in chunks and each finished item is appended to
``completions.jsonl`` at once, so an interrupted evaluation resumes where it stopped
(a rerun with the same settings skips the items already in the file).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.evaluate.metrics import answered_rate, maj_at_k, pass_at_k, run_accuracy
from openrft.models.backends.base import Generator, SamplingParams
from openrft.pipeline.rundir import JsonlStore, begin_stage, finish_stage
from openrft.tasks import Task, task_for

COMPLETIONS = "completions.jsonl"


@dataclass
class EvalConfig:
    """How to evaluate. Defaults follow the OpenRFT protocol: 3 sampled runs at temperature 0.6."""

    n: int = field(default=3, metadata={"help": "sampled runs per item; accuracy is averaged over runs"})
    temperature: float = field(default=0.6, metadata={"help": "sampling temperature; 0 = greedy (then n is 1)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=2048, metadata={"help": "generation budget per completion"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    maj_k: int | None = field(default=None, metadata={"help": "k for maj@k (default: n)"})
    pass_k: int | None = field(default=None, metadata={"help": "k for pass@k (default: n)"})
    chunk_size: int = field(default=64, metadata={"help": "items generated between checkpoints of completions.jsonl"})

    def __post_init__(self) -> None:
        if self.temperature == 0:
            self.n = 1
        for name in ("maj_k", "pass_k"):
            k = getattr(self, name)
            if k is not None and not 1 <= k <= self.n:
                raise ValueError(f"{name}={k} must be between 1 and n={self.n}")

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)


@dataclass
class TaskMetrics:
    task: str
    items: int
    accuracy: float
    accuracy_std: float
    per_run: list[float]
    maj_at_k: float
    pass_at_k: float
    k: int
    answered: float
    mean_tokens: float
    truncated: float


@dataclass
class EvalResult:
    label: str
    model: str
    config: dict[str, Any]
    tasks: list[TaskMetrics]
    tokens: int
    seconds: float
    records: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @property
    def average(self) -> float:
        """Macro average over tasks (the OpenRFT tables' 'Avg' column)."""
        return sum(t.accuracy for t in self.tasks) / len(self.tasks) if self.tasks else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("records")
        d["average"] = self.average
        d["tokens_per_s"] = self.tokens / self.seconds if self.seconds else None
        return d


def grade_item(task: Task, sample: Sample, completions) -> dict[str, Any]:
    texts = [c.text for c in completions]
    if hasattr(task, "grade_many"):  # program-of-thought: all programs of the item in one parallel sandbox call
        grades = task.grade_many(texts, [sample] * len(texts))
    else:
        grades = [task.grade(t, sample) for t in texts]
    return {
        "id": sample.id,
        "task": sample.task,
        "gold": sample.answer,
        "samples": [
            {"text": c.text, "extracted": g.extracted, "correct": g.correct, "num_tokens": c.num_tokens,
             "finish_reason": c.finish_reason}
            for c, g in zip(completions, grades)
        ],
    }


def aggregate(records: Sequence[dict[str, Any]], config: EvalConfig) -> list[TaskMetrics]:
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    out = []
    for task, recs in by_task.items():
        correct = [[s["correct"] for s in r["samples"]] for r in recs]
        answers = [[s["extracted"] for s in r["samples"]] for r in recs]
        samples = [s for r in recs for s in r["samples"]]
        acc = run_accuracy(correct)
        k_maj, k_pass = config.maj_k or config.n, config.pass_k or config.n
        out.append(TaskMetrics(
            task=task, items=len(recs), accuracy=acc.mean, accuracy_std=acc.std, per_run=list(acc.per_run),
            maj_at_k=maj_at_k(answers, correct, k_maj), pass_at_k=pass_at_k(correct, k_pass), k=k_pass,
            answered=answered_rate(answers),
            mean_tokens=sum(s["num_tokens"] for s in samples) / len(samples),
            truncated=sum(s["finish_reason"] == "length" for s in samples) / len(samples),
        ))
    return out


def evaluate(
    generator: Generator,
    samples: Sequence[Sample],
    config: EvalConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    label: str = "Vanilla",
    model_name: str = "",
    examples_for=None,
    show_progress: bool = True,
) -> EvalResult:
    """Generate ``config.n`` completions per sample, grade them with the sample's task, aggregate per task.

    ``examples_for(sample) -> list[Sample]`` supplies few-shot examples (ICL) for the prompt.
    With ``out_dir``, every graded item is appended to ``completions.jsonl`` as soon as its
    chunk finishes, and a rerun with the same settings resumes from there.
    """
    if not samples:
        raise ValueError("no samples to evaluate")
    tasks = {s.answer_type: task_for(s) for s in samples}
    prompts = {s.id: tasks[s.answer_type].messages(s, examples_for(s) if examples_for else ()) for s in samples}
    prompt_hash = hashlib.sha256(json.dumps([prompts[s.id] for s in samples]).encode()).hexdigest()
    done: dict[str, dict[str, Any]] = {}
    store = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        manifest, _ = begin_stage(out_dir, "eval", {"model": model_name, "label": label,
                                                     **(asdict(config) | {"chunk_size": None})},
                                  {"prompts": prompt_hash}, seed=config.seed, resume_keys=[COMPLETIONS])
        store = JsonlStore(out_dir / COMPLETIONS)
        done = store.load()
    todo = [s for s in samples if s.id not in done]
    progress = _Progress(len(todo) * config.n, show_progress)
    t0 = time.perf_counter()
    tokens = 0
    try:
        for start in range(0, len(todo), config.chunk_size):
            chunk = todo[start:start + config.chunk_size]
            outs = generator.generate([prompts[s.id] for s in chunk], config.sampling, progress=progress.update)
            recs = [grade_item(tasks[s.answer_type], s, o) for s, o in zip(chunk, outs)]
            tokens += sum(x["num_tokens"] for r in recs for x in r["samples"])
            for r in recs:
                done[r["id"]] = r
            if store is not None:
                store.append(recs)
    finally:
        progress.close()
    seconds = time.perf_counter() - t0
    records = [done[s.id] for s in samples]
    if out_dir is not None:
        finish_stage(out_dir, manifest, items=len(records), tokens=tokens, seconds=round(seconds, 2))
    return EvalResult(label=label, model=model_name, config=asdict(config), tasks=aggregate(records, config),
                      tokens=tokens, seconds=seconds, records=records)


class _Progress:
    """tqdm bar over sequences with generated tokens/s in the postfix."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="generating", unit="seq", disable=not enabled, dynamic_ncols=True)
        self.tokens = 0
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, new_tokens: int) -> None:
        self.tokens += new_tokens
        self.bar.update(done)
        now = time.perf_counter()
        if now - self.last > 0.5:
            self.last = now
            self.bar.set_postfix(tok_s=f"{self.tokens / max(now - self.t0, 1e-9):.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
