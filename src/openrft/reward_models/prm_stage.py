"""The pipeline's ``prm`` stage: a process reward model trained on the policy's own rollouts.

Between ``sft`` and ``rl``: the warmed-up policy answers every training question ``n_completions`` times, each
reply's steps are labelled Math-Shepherd style (``n_rollouts`` continuations from each step prefix, graded by
the task's grader: the fraction that reaches the gold answer), and a value-head PRM is trained on those labels
(LoRA on the policy's own backbone, the SFT adapter merged in, by default; on the plain base model with
``policy_backbone: false``). The ``rl`` stage of the same recipe uses it with ``reward: {prm: stage}``, and
the ``eval`` stage reranks with it with ``rerank: prm:stage``.

With ``quality_questions > 0`` the stage also measures the PRM on held-out questions labelled the same way
(:mod:`openrft.reward_models.quality`): step AUC and accuracy, first-error detection, best-of-k against maj@k
and pass@k, next to a constant scorer (and a judge PRM when ``quality_judge`` names one), in
``quality.json``; the run report plots it.

Stage directory::

    labels/      completions.jsonl, step_labels.jsonl (per question, append-only: a killed run resumes),
                 steps.jsonl (the flat StepExample file the PRM trains on), manifest.json
    checkpoint/  the PRM (ValueHeadPRM.from_pretrained reads it, or this directory)
    metrics.jsonl, metrics.json, manifest.json     training (see openrft.reward_models.prm_train)
    quality/     held-out labels (same layout as labels/) and quality.json
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.core.rundir import (
    atomic_write_json, begin_stage, file_hash, finish_stage, path_fingerprint, stable_hash, without_legacy_values,
)
from openrft.reward_models.labels import (
    COMPLETIONS_FILE, FLAT_STEPS_FILE, STEP_LABELS_FILE, StepExample, label_policy_rollouts, read_step_examples,
    write_step_examples,
)
from openrft.rewards.prm.loader import prm_fingerprint
from openrft.reward_models.quality import QUALITY_DIR, QUALITY_FILE, QUALITY_MEASURES
from openrft.reward_models.prm_train import PRMTrainConfig, PRMTrainResult, StepLabelSettings, run_prm_train
from openrft.reward_models.value_head_train import ValueHeadTrainSettings

logger = logging.getLogger(__name__)

__all__ = ["PRMStageConfig", "PRMStageResult", "run_prm_stage"]

LABELS_DIR = "labels"


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class PRMStageConfig(ValueHeadTrainSettings, StepLabelSettings):
    """Settings of the ``prm`` stage (a recipe's ``stages.prm``): labelling, PRM training and quality measurement.

    >>> PRMStageConfig().n_completions, PRMStageConfig().policy_backbone
    (4, True)
    >>> PRMStageConfig(n_rollouts=0)
    Traceback (most recent call last):
    ...
    ValueError: n_rollouts must be >= 1 (continuations sampled from each step prefix to estimate its label), got 0
    """

    n_completions: int = _help("policy completions labelled per training question", default=4)
    max_new_tokens: int = _help("generation budget of completions and rollouts", default=256)
    generation_batch_size: int = _help("sequences decoded together while labelling", default=64)
    label_chunk: int = _help("questions labelled per generate call; a kill loses at most these", default=4)
    policy_backbone: bool = _help("train the PRM on the policy's own backbone (the SFT adapter merged into the base "
                                  "model) instead of the plain base model", default=True)
    questions: int | None = _help("label at most this many training questions (default: all)", default=None)
    quality_questions: int = _help("held-out questions labelled the same way to measure the PRM (0 = none)",
                                   default=0)
    quality_completions: int = _help("completions per held-out question for best-of-k (k = 4 and this)", default=8)
    quality_judge: str | None = _help("also score the held-out steps with this PRM spec (e.g. judge:smollm2-135m) "
                                      "for comparison", default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_label_settings()
        if self.label_chunk < 1:
            raise ValueError(f"label_chunk must be >= 1, got {self.label_chunk}")
        if self.questions is not None and self.questions < 1:
            raise ValueError(f"questions must be >= 1 or null (all), got {self.questions}")
        if self.quality_questions < 0:
            raise ValueError(f"quality_questions must be >= 0, got {self.quality_questions}")
        if self.quality_questions and self.quality_completions < max(self.n_completions, 1):
            raise ValueError(f"quality_completions ({self.quality_completions}) must be >= n_completions "
                             f"({self.n_completions}): the first n_completions of each held-out question are labelled")

    def label_settings(self) -> dict[str, Any]:
        return without_legacy_values({k: getattr(self, k) for k in (
            "n_completions", "n_rollouts", "temperature", "max_new_tokens", "step_rule", "seed", "questions",
            "label_chunk", "share_prefixes", "reply_continuations")}, self.LEGACY)


@dataclass
class PRMStageResult:
    out_dir: Path
    checkpoint_dir: Path
    skipped: bool
    metrics: dict[str, Any]
    quality: dict[str, Any] | None
    labels: dict[str, Any]


def _label(config: PRMStageConfig, samples: Sequence[Sample], out: Path, generator_fn, *, n_completions: int,
           label_first: int | None, policy_id: dict[str, str], examples_for, show_progress: bool,
           what: str) -> tuple[list[StepExample], dict[str, Any]]:
    """Label ``samples`` into ``out`` (resumable), or reuse a finished labelling with the same fingerprint."""
    prompts = [s.id for s in samples]
    if examples_for is not None:
        from openrft.tasks import task_for

        prompts = [task_for(s).messages(s, list(examples_for(s))) for s in samples]
    inputs = {"samples": stable_hash([s.to_dict() for s in samples]), "prompts": stable_hash(prompts), **policy_id}
    settings = config.label_settings() | {"n_completions": n_completions, "label_first": label_first}
    manifest, finished = begin_stage(out, what, settings, inputs, seed=config.seed,
                                     resume_keys=[COMPLETIONS_FILE, STEP_LABELS_FILE])
    if finished and (out / FLAT_STEPS_FILE).is_file():
        return read_step_examples(out / FLAT_STEPS_FILE) if (out / FLAT_STEPS_FILE).stat().st_size else [], \
            dict(manifest.stats)
    t0 = time.perf_counter()
    generator = generator_fn()
    examples = label_policy_rollouts(
        generator, samples, out, n_completions=n_completions, n_rollouts=config.n_rollouts,
        step_rule=config.step_rule, max_new_tokens=config.max_new_tokens, temperature=config.temperature,
        seed=config.seed, chunk=config.label_chunk, examples_for=examples_for, show_progress=show_progress,
        label_first=label_first, share_prefixes=config.share_prefixes, reply_continuations=config.reply_continuations)
    write_step_examples(out / FLAT_STEPS_FILE, examples)
    steps = sum(len(e.steps) for e in examples)
    stats = {"questions": len(samples), "solutions": len(examples), "steps": steps,
             "good_step_fraction": (sum(x > 0 for e in examples for x in e.labels) / steps) if steps else None,
             "correct_solution_fraction": (sum(bool(e.meta.get("completion_correct")) for e in examples)
                                           / len(examples)) if examples else None,
             "seconds": round(time.perf_counter() - t0, 2)}
    finish_stage(out, manifest, **stats)
    return examples, stats


def run_prm_stage(config: PRMStageConfig, samples: Sequence[Sample], out_dir: str | os.PathLike, *,
                  policy_model: str, policy_adapter: str | os.PathLike | None = None,
                  quality_samples: Sequence[Sample] = (), examples_for: Callable | None = None,
                  show_progress: bool = True, log: Callable[[str], None] | None = None) -> PRMStageResult:
    """Label the policy's rollouts on ``samples``, train the PRM, and measure it on ``quality_samples``.

    Each part is skipped when its finished manifest matches (labels: the questions, their prompts, the policy's
    weights and the labelling settings; training: the labels and the training settings; quality: the PRM's
    weights too), and a killed labelling resumes from its stores.
    """
    from openrft.models.lora import resolve_adapter_dir

    say = log or logger.info
    out = Path(out_dir)
    samples = list(samples)[: config.questions] if config.questions else list(samples)
    if not samples:
        raise ValueError("the prm stage has no training questions to label")
    adapter = str(resolve_adapter_dir(policy_adapter)) if policy_adapter is not None else None
    policy_id = {"policy_model": path_fingerprint(policy_model) or policy_model,
                 **({"policy_adapter": file_hash(adapter)} if adapter else {})}
    generator: list = []

    def get_generator():
        if not generator:
            from openrft.models.backends.hf import TransformersGenerator

            generator.append(TransformersGenerator.from_pretrained(policy_model, adapter=adapter, device=config.device,
                                                                   batch_size=config.generation_batch_size))
        return generator[0]

    examples, label_stats = _label(config, samples, out / LABELS_DIR, get_generator, n_completions=config.n_completions,
                                   label_first=None, policy_id=policy_id, examples_for=examples_for,
                                   show_progress=show_progress, what="prm_labels")
    if not examples:
        raise ValueError(f"labelling {len(samples)} questions gave no solution with a step: the policy's replies were "
                         f"empty (see {out / LABELS_DIR / COMPLETIONS_FILE})")
    say(f"prm: {label_stats.get('solutions')} labelled solutions, {label_stats.get('steps')} steps, "
        f"{(label_stats.get('good_step_fraction') or 0):.2f} of them good")
    train_fields = {f: getattr(config, f) for f in asdict(ValueHeadTrainSettings())}
    train_config = PRMTrainConfig(**(train_fields | {
        "labels": [str(out / LABELS_DIR / FLAT_STEPS_FILE)], "step_rule": config.step_rule,
        "step_token": config.step_token, "label_mode": config.label_mode, "model": policy_model,
        "init_adapter": adapter if config.policy_backbone else None}))
    generator.clear()  # the policy is not needed while the PRM trains (quality labelling loads it again if needed)
    trained: PRMTrainResult = run_prm_train(train_config, out, show_progress=show_progress, log=say)
    quality = None
    if config.quality_questions and quality_samples:
        quality = measure_quality(config, list(quality_samples)[: config.quality_questions], out, trained,
                                  get_generator, policy_id, examples_for, show_progress, say)
    return PRMStageResult(out, trained.checkpoint_dir, trained.skipped, trained.metrics, quality, label_stats)


def _sans_measures(identity: dict | None) -> dict:
    return {k: v for k, v in (identity or {}).items() if k != "measures"}


def measure_quality(config: PRMStageConfig, samples: Sequence[Sample], out: Path, trained: PRMTrainResult,
                    get_generator, policy_id: dict[str, str], examples_for, show_progress: bool,
                    say: Callable[[str], None]) -> dict[str, Any]:
    """``quality/quality.json``: the trained PRM (and a constant scorer, and ``quality_judge``) on held-out steps."""
    import json

    from openrft.core.rundir import JsonlStore
    from openrft.reward_models.quality import (
        best_of_k_quality, first_error_quality, held_out_replies, reply_quality, score_replies, step_quality,
    )
    from openrft.rewards.prm.loader import load_scorer

    qdir = out / QUALITY_DIR
    examples, stats = _label(config, samples, qdir, get_generator, n_completions=config.quality_completions,
                             label_first=config.n_completions, policy_id=policy_id, examples_for=examples_for,
                             show_progress=show_progress, what="prm_quality_labels")
    prm_id = prm_fingerprint(trained.checkpoint_dir)
    ident = {"prm": prm_id, "judge": config.quality_judge, "labels": stats, "measures": QUALITY_MEASURES}
    path = qdir / QUALITY_FILE
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if old.get("identity") == ident:
        return old
    # the same PRM, judge and labels measured by an older version of the measures: reuse its reply scores
    cached = old.get("reply_scores", {}) if _sans_measures(old.get("identity")) == _sans_measures(ident) else {}
    t0 = time.perf_counter()
    labels = [list(e.labels) for e in examples]
    names = ["trained"] + (["judge"] if config.quality_judge else [])
    completions = JsonlStore(qdir / COMPLETIONS_FILE).load()
    texts = [completions[s.id]["texts"] for s in samples]
    ks = sorted({k for k in (4, config.quality_completions) if k <= config.quality_completions})
    result: dict[str, Any] = {"identity": ident, "questions": len(samples), "labelled_solutions": len(examples),
                              "scorers": {}, "reply_scores": {}}
    index = {s.id: i for i, s in enumerate(samples)}
    replies = held_out_replies(samples, texts, config.step_rule)
    for name in names:
        per_question = cached.get(name)
        if per_question is None:
            scorer = load_scorer(config.quality_judge if name == "judge" else str(trained.checkpoint_dir),
                                 dtype=config.dtype)  # the stage's precision ("auto": the device's default)
            try:
                per_question = score_replies(scorer, replies)
            finally:
                scorer.close()
        result["reply_scores"][name] = per_question
        # the labelled replies are the first ones of each question, split the same way
        scores = [per_question[index[e.meta["sample_id"]]][e.meta["completion_index"]] for e in examples]
        result["scorers"][name] = {
            "steps": step_quality(scores, labels), "first_error": first_error_quality(scores, labels),
            "replies": reply_quality(per_question, replies.correct),
            "best_of_k": best_of_k_quality(per_question, replies.correct, replies.answers, ks)}
    constant = [[0.5] * len(y) for y in labels]
    result["scorers"]["constant"] = {"steps": step_quality(constant, labels),
                                     "first_error": first_error_quality(constant, labels)}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(path, result)
    trained_q = result["scorers"]["trained"]
    say(f"prm quality on {len(samples)} held-out questions: step AUC {trained_q['steps']['auc']}, reply AUC within "
        f"a question {trained_q['replies']['within_question_auc']}, first-error F1 {trained_q['first_error']['f1']}")
    return result
