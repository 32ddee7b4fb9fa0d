"""Evaluation: sample n completions per item, grade them, aggregate per task.

Items are generated in chunks and each finished item is appended to
``completions.jsonl`` at once, so an interrupted evaluation resumes where it stopped
(a rerun with the same settings skips the items already in the file).

With ``rerank`` set, every completion is also scored by a PRM or an ORM
(:mod:`openrft.evaluate.rerank`) once its chunk is generated: each sample gets ``score``
(and, from a PRM, ``step_scores``) and the record names the scorer under ``"rerank"``.
The rerank settings are not part of the stage's fingerprint: a rerun that adds or changes
``rerank`` keeps the completions and scores only those not yet scored by the same scorer
and step rule (a new ``rerank_agg`` is recomputed from the stored step scores).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from openrft.data.sample import DataError, Sample
from openrft.evaluate.prompts import fit_prompts
from openrft.core.metrics import answered_rate, maj_at_k, pass_at_k, rerank_at_k, run_accuracy, weighted_maj_at_k
from openrft.evaluate.rerank import Reranker, check_rerank_spec, load_reranker
from openrft.models.backends.base import Generator, SamplingParams, generate_settings
from openrft.core.rundir import JsonlStore, begin_stage, finish_stage
from openrft.rewards.combine import aggregate_steps, check_agg
from openrft.rewards.steps import step_rule as get_step_rule
from openrft.tasks import Task, grade_all, task_for

COMPLETIONS = "completions.jsonl"
#: EvalConfig fields that choose how completions are scored, kept out of the stage fingerprint
RERANK_FIELDS = ("rerank", "rerank_agg", "step_rule", "rerank_k", "rerank_batch_size")


@dataclass
class EvalConfig:
    """How to evaluate. Defaults follow the OpenRFT protocol: 3 sampled runs at temperature 0.6."""

    n: int = field(default=3, metadata={"help": "sampled runs per item; accuracy is averaged over runs"})
    temperature: float = field(default=0.6, metadata={"help": "sampling temperature; 0 = greedy (then n is 1)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=2048, metadata={"help": "generation budget per completion"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    greedy_run: bool = field(default=False, metadata={
        "help": "also decode each item greedily, in the same pass as the sampled runs (the transformers backend "
                "prefills each prompt once for both); reported as greedy accuracy, kept out of the sampled "
                "metrics (ignored when temperature is 0)"})
    maj_k: int | None = field(default=None, metadata={"help": "k for maj@k (default: n)"})
    pass_k: int | None = field(default=None, metadata={"help": "k for pass@k (default: n)"})
    chunk_size: int = field(default=64, metadata={"help": "items per generation call (each finished item is saved to completions.jsonl at once)"})
    rerank: str | None = field(default=None, metadata={
        "help": "score every completion for rerank@k and weighted_maj@k: prm:<checkpoint | judge:<model> | "
                "http(s)://url> or orm:<checkpoint>; none = no reranking"})
    rerank_agg: str = field(default="min", metadata={
        "help": "PRM reranking: a completion's score from its step scores, min|mean|last|product"})
    step_rule: str = field(default="newline", metadata={
        "help": "PRM reranking: how completions are cut into steps, newline|blank_line|step_k|re:<separator regex>"})
    rerank_k: int | None = field(default=None, metadata={"help": "k for rerank@k and weighted_maj@k (default: n)"})
    rerank_batch_size: int | None = field(default=None, metadata={
        "help": "completions per PRM/ORM forward pass (default: the scorer's own)"})

    def __post_init__(self) -> None:
        if self.temperature == 0:
            self.n, self.greedy_run = 1, False
        self.sampling  # noqa: B018 - validates n, temperature, top_p, max_new_tokens
        if self.chunk_size < 1 or (self.rerank_batch_size is not None and self.rerank_batch_size < 1):
            raise ValueError(f"chunk_size and rerank_batch_size must be >= 1, got {self.chunk_size} and "
                             f"{self.rerank_batch_size}")
        for name in ("maj_k", "pass_k", "rerank_k"):
            k = getattr(self, name)
            if k is not None and not 1 <= k <= self.n:
                raise ValueError(f"{name}={k} must be between 1 and n={self.n}")
        if self.rerank is not None:
            check_rerank_spec(self.rerank)
        check_agg(self.rerank_agg)
        get_step_rule(self.step_rule)

    def rerank_identity(self) -> dict[str, Any] | None:
        """What a record's scores must have been made with to count as scored for this config."""
        if self.rerank is None:
            return None
        kind, target = check_rerank_spec(self.rerank)
        prm = kind == "prm"
        ident = {"spec": self.rerank, "step_rule": self.step_rule if prm else None,
                 "agg": self.rerank_agg if prm else None}
        from openrft.core.rundir import path_fingerprint

        if prm:
            from openrft.rewards.prm.loader import prm_fingerprint

            weights = prm_fingerprint(target)
        else:
            weights = path_fingerprint(target)
        if weights and weights != target:  # a local checkpoint: new weights behind the same path are rescored
            ident["weights"] = weights
        return ident

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=self.seed)

    @property
    def settings(self) -> list[SamplingParams]:
        """What each item is decoded with: the sampled runs, then (``greedy_run``) one greedy completion."""
        greedy = [SamplingParams(n=1, temperature=0.0, max_new_tokens=self.max_new_tokens, seed=self.seed)]
        return [self.sampling] + (greedy if self.greedy_run else [])


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
    rerank_at_k: float | None = None
    weighted_maj_at_k: float | None = None
    rerank_k: int | None = None
    greedy_accuracy: float | None = None


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

    @property
    def rerank_average(self) -> float | None:
        """Macro average of rerank@k over tasks; None without reranking."""
        vals = [t.rerank_at_k for t in self.tasks]
        return sum(vals) / len(vals) if vals and None not in vals else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("records")
        d["average"] = self.average
        d["rerank_average"] = self.rerank_average
        d["tokens_per_s"] = self.tokens / self.seconds if self.seconds else None
        return d


def weights_name(model: str, adapter_dir: str | os.PathLike | None = None, precision: str | None = None) -> str:
    """How an evaluation names the weights it ran (part of its fingerprint): the model, and the adapter merged into
    it, each local one with its content hash, so new weights behind the same path are evaluated again, and the
    dtype they ran in where it is not fp32 (the generator's ``precision``). The eval CLI and the pipeline's eval
    stage both name their weights this way.

    >>> weights_name("smollm2-135m")
    'smollm2-135m'
    >>> weights_name("smollm2-135m", precision="bfloat16")
    'smollm2-135m [bfloat16]'
    """
    from openrft.core.rundir import path_fingerprint

    name = model
    if (fingerprint := path_fingerprint(model)) is not None:
        name = f"{model} ({fingerprint})"
    if adapter_dir is not None:
        name = f"{name} + {adapter_dir} ({path_fingerprint(adapter_dir)})"
    return f"{name} [{precision}]" if precision else name


@dataclass(frozen=True)
class EvaluatedWeights:
    """The weights an evaluation runs: a model (bundled name, hub id or local directory), the adapter merged into it
    and the dtype they compute in where it is not fp32. The evaluation's identity follows the bytes of local weights,
    not their paths (the same run directory named another way, or copied by ``--reuse``, is the same evaluation);
    :attr:`name`, shown in reports, names the paths.

    >>> EvaluatedWeights("smollm2-135m").identity(), EvaluatedWeights("smollm2-135m", precision="bfloat16").name
    (({'model': 'smollm2-135m'}, {}), 'smollm2-135m [bfloat16]')
    """

    model: str
    adapter: str | None = None
    precision: str | None = None

    @property
    def name(self) -> str:
        return weights_name(self.model, self.adapter, self.precision)

    def identity(self) -> tuple[dict[str, Any], dict[str, str]]:
        """``(settings, inputs)``: local weights as ``"local"`` in the settings and their content hash in inputs."""
        from openrft.core.rundir import pin_local_inputs

        settings: dict[str, Any] = {"model": self.model}
        settings |= ({"adapter": self.adapter} if self.adapter else {}) | (
            {"precision": self.precision} if self.precision else {})
        inputs: dict[str, str] = {}
        pin_local_inputs(settings, inputs, {"model": self.model, "adapter": self.adapter})
        return settings, inputs

    def earlier_identity(self) -> dict[str, Any] | None:
        """The settings evaluations were known by before their identity left out paths (fp32 only, then)."""
        return None if self.precision else {"model": weights_name(self.model, self.adapter)}


def grade_item(task: Task, sample: Sample, completions, greedy: bool = False) -> dict[str, Any]:
    """The item's record: each completion graded under ``samples``; with ``greedy``, the last completion is the
    item's greedy decoding and goes under ``greedy`` instead (graded in the same call)."""
    texts = [c.text or "" for c in completions]
    grades = grade_all([sample] * len(texts), texts, {sample.answer_type: task})  # a program task: one sandbox call
    graded = [{"text": c.text, "extracted": g.extracted, "correct": g.correct, "num_tokens": c.num_tokens,
               "finish_reason": c.finish_reason} for c, g in zip(completions, grades)]
    record = {"id": sample.id, "task": sample.task, "question": task.render_question(sample), "gold": sample.answer}
    if greedy:
        record["greedy"] = graded.pop()
    return record | {"samples": graded}


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
        if config.greedy_run and all("greedy" in r for r in recs):
            out[-1].greedy_accuracy = sum(bool(r["greedy"]["correct"]) for r in recs) / len(recs)
        if config.rerank is not None:
            k = config.rerank_k or config.n
            scores = [[s["score"] for s in r["samples"]] for r in recs]
            out[-1].rerank_at_k = rerank_at_k(scores, correct, k)
            out[-1].weighted_maj_at_k = weighted_maj_at_k(answers, scores, correct, k)
            out[-1].rerank_k = k
    return out


def _scored(record: dict[str, Any], ident: dict[str, Any]) -> bool:
    return record.get("rerank") == ident


def _reaggregate(record: dict[str, Any], ident: dict[str, Any]) -> bool:
    """Recompute a PRM record's scores for a new ``agg`` from its stored step scores; False when it cannot."""
    old = record.get("rerank") or {}
    if ident["agg"] is None or {**old, "agg": None} != {**ident, "agg": None}:
        return False
    if not all(isinstance(s.get("step_scores"), list) for s in record["samples"]):
        return False
    for s in record["samples"]:
        s["score"] = aggregate_steps(s["step_scores"], ident["agg"])
    record["rerank"] = dict(ident)
    return True


def score_records(reranker: Reranker, records: Sequence[dict[str, Any]], samples: dict[str, Sample],
                  ident: dict[str, Any]) -> None:
    """Score every completion of ``records`` in one batched call; writes ``score``/``step_scores`` in place."""
    questions = []
    for r in records:
        s = samples[r["id"]]
        questions.append(task_for(s).render_question(s))
    scored = reranker.score(questions, [[x["text"] for x in r["samples"]] for r in records])
    for r, group in zip(records, scored, strict=True):
        for x, sc in zip(r["samples"], group, strict=True):
            x["score"] = sc.score
            if sc.steps is not None:
                x["step_scores"] = list(sc.steps)
            else:
                x.pop("step_scores", None)
        r["rerank"] = dict(ident)


class _LazyReranker:
    """The reranker an evaluation scores with: the caller's, or the config's, loaded when first needed and closed
    by :meth:`close` (a caller's reranker is the caller's to close)."""

    def __init__(self, given: Reranker | None, config: EvalConfig):
        self.given, self.config, self.owned = given, config, None

    def __call__(self) -> Reranker:
        if self.given is not None:
            return self.given
        if self.owned is None:
            assert self.config.rerank is not None
            self.owned = load_reranker(self.config.rerank, agg=self.config.rerank_agg,
                                       step_rule=self.config.step_rule, batch_size=self.config.rerank_batch_size)
        return self.owned

    def close(self) -> None:
        if self.owned is not None:
            self.owned.close()
            self.owned = None


def _begin_eval(out_dir: Path, weights: EvaluatedWeights | str, label: str, config: EvalConfig, prompt_hash: str):
    """The eval stage's manifest: the weights' identity (or a plain name), the label and the generation settings."""
    # greedy_run joins the identity only when on, so evaluations from before it existed keep theirs
    generation = {k: v for k, v in asdict(config).items()
                  if k not in RERANK_FIELDS and (k != "greedy_run" or v)} | {"chunk_size": None}
    settings, inputs, earlier = {"model": weights}, {"prompts": prompt_hash}, []
    if isinstance(weights, EvaluatedWeights):
        named, local = weights.identity()
        settings, inputs = named, inputs | local
        if (old := weights.earlier_identity()) is not None:
            earlier.append((old | {"label": label, **generation}, {"prompts": prompt_hash}))
    manifest, _ = begin_stage(out_dir, "eval", settings | {"label": label, **generation}, inputs,
                              seed=config.seed, resume_keys=[COMPLETIONS], earlier=earlier)
    return manifest


def evaluate(
    generator: Generator,
    samples: Sequence[Sample],
    config: EvalConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    label: str = "Vanilla",
    model_name: str | EvaluatedWeights = "",
    examples_for=None,
    show_progress: bool = True,
    reranker: Reranker | None = None,
    long_questions: str = "skip",
) -> EvalResult:
    """Generate ``config.n`` completions per sample, grade them with the sample's task, aggregate per task.

    ``examples_for(sample) -> list[Sample]`` supplies few-shot examples (ICL) for the prompt. A prompt too long for
    the model's context is skipped with a warning naming it, before anything is generated (``long_questions=
    "error"`` refuses it instead: :func:`~openrft.evaluate.prompts.fit_prompts`).
    With ``out_dir``, every graded item is appended to ``completions.jsonl`` as soon as its
    completions are all done, and a rerun with the same settings resumes from there.

    With ``config.rerank`` (or a ``reranker``, whose ``spec``, step rule and aggregator then
    replace the config's) every completion is scored for rerank@k and weighted_maj@k; a
    reranker named only by ``config.rerank`` is loaded when the first completion needs
    scoring and closed at the end.

    ``model_name`` names what is evaluated, in the report and in the stage's identity; an
    :class:`EvaluatedWeights` gives its name to the report and its path-free identity to the stage.
    """
    if not samples:
        raise ValueError("no samples to evaluate")
    weights = model_name if isinstance(model_name, EvaluatedWeights) else None
    if weights is not None:
        model_name = weights.name
    if reranker is not None:
        config = replace(config, rerank=reranker.spec, step_rule=reranker.step_rule or config.step_rule,
                         rerank_agg=getattr(reranker, "agg", config.rerank_agg))
    ident = config.rerank_identity()
    get_reranker = _LazyReranker(reranker, config)

    tasks = {s.answer_type: task_for(s) for s in samples}
    prompts = {s.id: tasks[s.answer_type].messages(s, examples_for(s) if examples_for else ()) for s in samples}
    samples = fit_prompts(generator, samples, prompts, long_questions)
    if not samples:
        raise DataError("no samples left to evaluate: every prompt is too long for the model's context")
    prompt_hash = hashlib.sha256(json.dumps([prompts[s.id] for s in samples]).encode()).hexdigest()
    done: dict[str, dict[str, Any]] = {}
    store = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        manifest = _begin_eval(out_dir, weights or model_name, label, config, prompt_hash)
        store = JsonlStore(out_dir / COMPLETIONS)
        done = store.load()
    todo = [s for s in samples if s.id not in done]
    by_id = {s.id: s for s in samples}
    progress = _Progress(len(todo) * sum(p.n for p in config.settings), show_progress)
    t0 = time.perf_counter()
    try:
        tokens = _generate_todo(generator, todo, prompts, tasks, config, done, store, progress,
                                None if ident is None else lambda recs: score_records(get_reranker(), recs, by_id, ident))
        progress.close()
        if store is not None and todo:  # items land in finishing order (scored ones twice): one line each, in order
            store.rewrite([done[s.id] for s in samples])
        if ident is not None:
            _score_stale(get_reranker, [done[s.id] for s in samples], by_id, ident, config.chunk_size, store,
                         show_progress)
    finally:
        progress.close()
        get_reranker.close()
    seconds = time.perf_counter() - t0
    records = [done[s.id] for s in samples]
    if out_dir is not None:
        finish_stage(out_dir, manifest, items=len(records), tokens=tokens, seconds=round(seconds, 2),
                     rerank=config.rerank, weights=model_name)
    return EvalResult(label=label, model=model_name, config=asdict(config), tasks=aggregate(records, config),
                      tokens=tokens, seconds=seconds, records=records)


def _generate_todo(generator, todo: list[Sample], prompts, tasks, config: EvalConfig,
                   done: dict[str, dict[str, Any]], store: JsonlStore | None, progress: "_Progress",
                   score) -> int:
    """Generate and grade ``todo`` in chunks; each item is saved the moment its completions are done (a kill
    loses only the items in flight), then ``score(records)`` (if any) runs on the chunk. Returns the tokens
    generated."""
    tokens = 0
    for start in range(0, len(todo), config.chunk_size):
        chunk = todo[start:start + config.chunk_size]

        def finished(i: int, outs, chunk=chunk) -> None:
            rec = grade_item(tasks[chunk[i].answer_type], chunk[i], outs, greedy=config.greedy_run)
            done[rec["id"]] = rec
            if store is not None:
                store.append([rec])

        generate_settings(generator, [prompts[s.id] for s in chunk], config.settings, finished,
                          progress=progress.update)
        recs = [done[s.id] for s in chunk]
        tokens += sum(x["num_tokens"] for r in recs for x in r["samples"])
        tokens += sum(r["greedy"]["num_tokens"] for r in recs if "greedy" in r)
        if score is not None:
            score(recs)
            if store is not None:
                store.append(recs)
    return tokens


def _score_stale(get_reranker, records: list[dict[str, Any]], by_id: dict[str, Sample], ident: dict[str, Any],
                 chunk_size: int, store: JsonlStore | None, show_progress: bool) -> None:
    """Score the records of an earlier run that this scorer has not scored; rewrite the JSONL once."""
    stale = [r for r in records if not _scored(r, ident)]
    if not stale:
        return
    todo = [r for r in stale if not _reaggregate(r, ident)]
    if todo:
        from tqdm.auto import tqdm

        with tqdm(total=len(todo), desc="scoring", unit="item", disable=not show_progress, dynamic_ncols=True) as bar:
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start:start + chunk_size]
                score_records(get_reranker(), chunk, by_id, ident)
                bar.update(len(chunk))
    if store is not None:
        store.rewrite(records)


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
