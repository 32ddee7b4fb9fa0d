"""The augment stage: LLM rewrites of each question + option shuffling, resumable, with provenance.

Per parent question: ask the rewriter for ``k`` variants of the stem (retrying with the
missing count, up to ``retries`` times, when the reply is empty, malformed or short of valid
variants), validate each (:mod:`openrft.augment.rewrite`), optionally let a teacher answer
each variant with the original options and drop it unless the task's grader accepts the
answer, then emit up to ``expansion`` samples: the original and the kept variants, each with
its options shuffled independently (:mod:`openrft.augment.shuffle`). Variants lost to validation
are re-asked for (the ``retries``); what is still missing after them is reported, per question
and in all, as the stats' ``shortfall`` from ``expansion`` (:mod:`openrft.augment.stats`).

Run directory (``out_dir``):

* ``rewrites.jsonl``: one record per parent (raw replies, every variant with its verdict),
  appended after each batch of parents, so an interrupted run resumes without paying for
  finished parents again. Records carry a key of the rewriting settings; a rerun with other
  shuffle settings reuses them, one with other rewriting settings redoes them.
* ``augmented.jsonl``: the output samples (written once, at the end, atomically).
* ``manifest.json``: config, input hash, stats (kept fraction, reasons histogram, ...).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrft.augment.config import TEMPLATE, AugmentConfig
from openrft.augment.rewrite import parse_variants, rewrite_messages, validate_variant
from openrft.augment.shuffle import balanced_targets, rng_for, shuffle_options, shuffle_skip_reason
from openrft.augment.stats import augment_stats, shortfall, warn_shortfall
from openrft.augment.tokens import protected_tokens
from openrft.data.loaders import load_samples, save_samples
from openrft.data.sample import Sample
from openrft.models.backends.base import Completion, Generator, SamplingParams
from openrft.core.rundir import JsonlStore, Manifest, begin_stage, finish_stage, stable_hash

logger = logging.getLogger(__name__)

AUGMENTED = "augmented.jsonl"
REWRITES = "rewrites.jsonl"
METHODS = ("original", "rewrite", "shuffle", "rewrite+shuffle", "renumber", "reword")


@dataclass
class AugmentResult:
    samples: list[Sample]
    stats: dict[str, Any]
    records: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)


def generator_label(generator: Generator | None, backend: str | None = None, model: str | None = None) -> str | None:
    """``backend:model`` naming the generator, for provenance (``model`` wins over what the generator says), with
    `` [dtype]`` where it does not compute in fp32."""
    if generator is None and not model:
        return None
    precision = getattr(generator, "precision", None)
    suffix = f" [{precision}]" if isinstance(precision, str) else ""
    if model:
        return f"{backend or getattr(generator, 'name', 'generator')}:{model}{suffix}"
    inner = getattr(generator, "model", None)
    if not isinstance(inner, str):
        inner = getattr(getattr(inner, "config", None), "_name_or_path", None) or getattr(inner, "name_or_path", None)
    name = getattr(generator, "name", type(generator).__name__)
    return (f"{name}:{inner}" if inner else str(name)) + suffix


# ----------------------------------------------------------------- rewriting
@dataclass
class _Parent:
    sample: Sample
    tokens: list
    attempts: list[dict[str, Any]] = field(default_factory=list)
    variants: list[dict[str, Any]] = field(default_factory=list)

    @property
    def kept(self) -> list[str]:
        return [v["text"] for v in self.variants if v["kept"]]


def _rewrite_batch(batch: Sequence[Sample], generator: Generator, teacher: Generator | None,
                   config: AugmentConfig, counter: Counter) -> list[_Parent]:
    """Rewrite, validate and (optionally) teacher-check the variants of ``batch``, with re-asks."""
    from openrft.tasks import task_for

    parents = [_Parent(s, protected_tokens(s.question) if config.require_tokens else []) for s in batch]
    for attempt in range(config.retries + 1):
        todo = [p for p in parents if len(p.kept) < config.k]
        if not todo:
            break
        temperature = config.temperature if attempt == 0 else max(config.temperature, config.retry_temperature)
        single = config.mode == "single"
        n = max(config.k - len(p.kept) for p in todo) if single else 1  # single: one sampled reply per variant
        params = SamplingParams(n=n, temperature=temperature, top_p=config.top_p,
                                max_new_tokens=config.max_new_tokens, seed=config.seed + attempt)
        prompts = [rewrite_messages(p.sample.question, config.k - len(p.kept), p.kept if attempt else (), single,
                                    config.prompt) for p in todo]
        outs, failures = _generate(generator, prompts, params, counter)
        checks: list[tuple[_Parent, dict[str, Any]]] = []  # rule-valid variants waiting for the teacher
        for p, out, failure in zip(todo, outs, failures):
            parsed = []
            for j, comp in enumerate(out):
                got = parse_variants(comp.text, p.sample.question)
                error = "generation_error" if failure else None if got else \
                    ("empty_reply" if not comp.text.strip() else "malformed_reply")
                p.attempts.append({"attempt": attempt, "raw": comp.text, "finish_reason": comp.finish_reason,
                                   "num_tokens": comp.num_tokens, "parsed": len(got), "error": error}
                                  | ({"sample": j} if single else {}) | ({"detail": failure} if failure else {}))
                parsed += got
            accepted = p.kept  # kept so far, plus this reply's valid ones: later variants must differ from them
            gold = p.sample.answer if p.sample.choices else None
            for text in parsed:
                verdict = validate_variant(text, p.sample.question, accepted, choices=p.sample.choices, gold=gold,
                                           rules=config.rules, tokens=p.tokens)
                rec = {"text": text, "attempt": attempt, "kept": False, "reason": verdict.reason,
                       "failed": list(verdict.failed), "detail": verdict.detail, "similarity": verdict.similarity}
                if verdict.kept and len(accepted) >= config.k:
                    rec.update(reason="surplus", failed=["surplus"], detail=f"more than the {config.k} asked")
                elif verdict.kept:
                    accepted.append(text)
                    if config.teacher_check:
                        checks.append((p, rec))
                    else:
                        rec["kept"] = True
                p.variants.append(rec)
        if checks:
            variant_samples = [p.sample.replace(question=rec["text"]) for p, rec in checks]
            prompts = [task_for(s).messages(s) for s in variant_samples]
            answers, failures = _generate(teacher or generator, prompts, SamplingParams(
                n=1, temperature=0.0, max_new_tokens=config.teacher_max_new_tokens, seed=config.seed), counter,
                kind="teacher_calls")
            for (p, rec), s, out, failure in zip(checks, variant_samples, answers, failures):
                grade = task_for(s).grade(out[0].text, s)
                rec["teacher"] = {"text": out[0].text, "extracted": grade.extracted, "correct": grade.correct} \
                    | ({"error": failure} if failure else {})
                if grade.correct:
                    rec["kept"] = True
                else:
                    rec.update(reason="teacher_wrong", failed=["teacher_wrong"],
                               detail=f"teacher answered {grade.extracted!r}, gold {s.answer!r}"
                               if grade.extracted is not None else "teacher gave no answer")
    return parents


def _prompt_error(err: BaseException) -> bool:
    """An error caused by one prompt (too long for the model, rejected with a 4xx), not by the endpoint."""
    from openrft.models.backends.openai_http import GenerationError

    if isinstance(err, GenerationError):
        return err.status is not None and 400 <= err.status < 500 and err.status not in (408, 429)
    return isinstance(err, ValueError)


def _generate(generator: Generator, prompts: list, params: SamplingParams, counter: Counter,
              kind: str = "llm_calls") -> tuple[list[list[Completion]], list[str | None]]:
    """``generate`` that isolates prompts the backend refuses: they get an empty reply and an error message.

    Endpoint failures (connection refused, timeouts after retries) propagate: the run stops, rerun to resume.
    """
    counter[kind] += 1
    try:
        return generator.generate(prompts, params), [None] * len(prompts)
    except Exception as err:  # noqa: BLE001 - sorted below: prompt errors are isolated, the rest re-raised
        if not _prompt_error(err):
            raise
        logger.warning("a batch of %d prompts failed (%s); retrying them one by one", len(prompts), err)
    outs: list[list[Completion]] = []
    failures: list[str | None] = []
    for prompt in prompts:
        counter[kind] += 1
        try:
            outs.append(generator.generate([prompt], params)[0])
            failures.append(None)
        except Exception as err:  # noqa: BLE001
            if not _prompt_error(err):
                raise
            outs.append([Completion("", 0, "error")])
            failures.append(f"{type(err).__name__}: {err}"[:500])
    return outs, failures


def _record(p: _Parent, key: str, label: str | None, config: AugmentConfig) -> dict[str, Any]:
    kept = p.kept
    status = "ok" if len(kept) >= config.k else "partial" if kept else "failed"
    return {"id": p.sample.id, "key": key, "generator": label, "status": status, "kept": kept,
            "attempts": p.attempts, "variants": p.variants}


# ----------------------------------------------------------------- expansion
def expand(sample: Sample, kept: Sequence[str], config: AugmentConfig, generator: str | None = None) -> list[Sample]:
    """The output samples of one parent: original and kept variants (up to ``expansion``), options shuffled.

    ``meta`` of each gets ``parent_id``, ``method`` (original | rewrite | shuffle | rewrite+shuffle),
    ``variant`` (0 for the original, i for the i-th kept rewrite), ``generator`` and ``option_order``.
    The original keeps the parent's id; the others are ``<parent>#aug<j>``.
    """
    slots: list[tuple[str, int]] = []  # (question text, variant index)
    if config.keep_original or not kept:
        slots.append((sample.question, 0))
    for i, text in enumerate(kept[: max(config.expansion - len(slots), 0)], 1):
        slots.append((text, i))
    can_shuffle = config.shuffle and shuffle_skip_reason(sample) is None
    if config.fill_with_shuffles and can_shuffle:
        while len(slots) < config.expansion:
            slots.append((sample.question, 0))
    shuffled_slots = [j for j, (_, v) in enumerate(slots) if can_shuffle and (v > 0 or config.shuffle_original
                                                                              or j > 0)]
    targets = dict(zip(shuffled_slots, balanced_targets(len(shuffled_slots), len(sample.choices or ()),
                                                        rng_for(config.seed, sample.id + "#balance"))))\
        if config.balance_gold and shuffled_slots else {}
    out: list[Sample] = []
    original_orders: list[list[int]] = [list(range(len(sample.choices or ())))]
    extra = 0
    for j, (text, variant) in enumerate(slots):
        if j == 0 and variant == 0:
            sid = sample.id
        else:
            extra += 1
            sid = f"{sample.id}#aug{extra}"
        s = sample.replace(id=sid, question=text)
        shuffled = j in shuffled_slots
        if shuffled:  # extra copies of the original steer clear of the orders it has already
            s = shuffle_options(s, config.seed, key=sid, target=targets.get(j),
                                avoid=original_orders if variant == 0 and j > 0 else ())
            if variant == 0:
                original_orders.append(s.meta["option_order"])
        method = ("rewrite+shuffle" if shuffled else "rewrite") if variant else ("shuffle" if shuffled else "original")
        meta = {**sample.meta, "parent_id": sample.id, "method": method, "variant": variant,
                "generator": generator if variant else None, "option_order": s.meta.get("option_order")}
        out.append(s.replace(meta=meta))
    return out


# --------------------------------------------------------------------- stage
def run_augment(samples: Sequence[Sample], generator: Generator | None, config: AugmentConfig,
                out_dir: str | os.PathLike | None = None, *, teacher: Generator | None = None,
                show_progress: bool = True) -> AugmentResult:
    """Augment ``samples``; with ``out_dir``, write the run directory and resume from it.

    ``generator`` rewrites (it may be None when ``config.k == 0``); ``teacher`` answers variants
    for ``config.teacher_check`` (default: the generator). Errors of the generator itself (an
    endpoint down for good) propagate after finished batches are saved: rerun to resume.
    """
    if not samples:
        raise ValueError("no samples to augment")
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise ValueError(f"duplicate sample id {s.id!r}; augmented ids are derived from it")
        seen.add(s.id)
    if config.backend == TEMPLATE:
        return _run_template(samples, config, out_dir)
    if config.k > 0 and generator is None:
        raise ValueError("rewriting (k > 0) needs a generator; pass k=0 to only shuffle options")
    label = generator_label(generator, config.backend, config.model) if config.k else None
    teacher_label = generator_label(teacher or generator, config.teacher_backend or config.backend,
                                    config.teacher_model or config.model) if config.teacher_check else None
    settings = stable_hash(config.rewrite_settings() | {"generator": label, "teacher": teacher_label})
    manifest: Manifest | None = None
    done: dict[str, dict[str, Any]] = {}
    store = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        manifest, finished = begin_stage(out_dir, "augment", config.identity() | {"generator": label},
                                         {"samples": stable_hash([s.to_dict() for s in samples])}, seed=config.seed)
        if finished and (out_dir / AUGMENTED).exists():
            logger.info("%s: finished with these settings already; loading %s", out_dir, AUGMENTED)
            return AugmentResult(load_samples(out_dir / AUGMENTED), dict(manifest.stats),
                                 JsonlStore(out_dir / REWRITES).load())
        store = JsonlStore(out_dir / REWRITES)
        done = store.load()
    keys = {s.id: stable_hash([settings, s.question, s.choices, s.answer]) for s in samples}
    stale = [i for i, r in done.items() if i in keys and r.get("key") != keys[i]]
    if stale:
        logger.warning("%d questions in %s were rewritten with other settings or inputs; redoing them",
                       len(stale), REWRITES)
        for i in stale:
            del done[i]
    counter: Counter = Counter()
    t0 = time.perf_counter()
    if config.k > 0:
        _rewrite_all(samples, generator, teacher, config, done, store, keys, label, counter, show_progress)
    outputs: list[Sample] = []
    for s in samples:
        kept = done[s.id]["kept"] if s.id in done else []
        outputs += expand(s, kept, config, done[s.id]["generator"] if s.id in done else None)
    stats = augment_stats(samples, outputs, [done[s.id] for s in samples if s.id in done], config)
    stats |= {"llm_calls": counter["llm_calls"], "teacher_calls": counter["teacher_calls"],
              "seconds": round(time.perf_counter() - t0, 2)}
    warn_shortfall(stats, config.expansion)
    if stats["not_shuffled"]:
        logger.info("options not shuffled for %s", ", ".join(f"{n} question(s): {r}"
                                                            for r, n in stats["not_shuffled"].items()))
    if out_dir is not None:
        save_samples(outputs, out_dir / AUGMENTED)
        assert manifest is not None
        finish_stage(out_dir, manifest, **stats)
    return AugmentResult(outputs, stats, {s.id: done[s.id] for s in samples if s.id in done})


def _run_template(samples: Sequence[Sample], config: AugmentConfig, out_dir) -> AugmentResult:
    """``backend: template``: the original plus up to ``expansion - 1`` verified renumbered / reworded variants."""
    from openrft.augment.template import template_variants

    manifest = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        manifest, finished = begin_stage(out_dir, "augment", config.identity(),
                                         {"samples": stable_hash([s.to_dict() for s in samples])}, seed=config.seed)
        if finished and (out_dir / AUGMENTED).exists():
            return AugmentResult(load_samples(out_dir / AUGMENTED), dict(manifest.stats))
    t0 = time.perf_counter()
    outputs: list[Sample] = []
    per_parent: list[int] = []
    for s in samples:
        variants = template_variants(s, min(config.k, config.expansion - 1), seed=config.seed) if config.k else []
        per_parent.append(len(variants))
        outputs.append(s.replace(meta={**s.meta, "parent_id": s.id, "method": "original", "variant": 0,
                                       "generator": None}))
        for j, v in enumerate(variants, 1):
            outputs.append(v.replace(id=f"{s.id}#aug{j}", meta={**v.meta, "parent_id": s.id, "variant": j,
                                                                 "generator": TEMPLATE}))
    methods = Counter(o.meta["method"] for o in outputs)
    stats = shortfall(samples, outputs, config.expansion) | {
        "samples_in": len(samples), "samples_out": len(outputs),
        "expansion": round(len(outputs) / len(samples), 3), "variants_requested": config.k * len(samples),
        "variants_parsed": sum(per_parent), "variants_kept": sum(per_parent),
        "kept_fraction": 1.0 if sum(per_parent) else None, "reasons": {}, "failed_rules": {}, "replies": 0,
        "reply_errors": {}, "questions_without_variant": sum(1 for n in per_parent if not n),
        "variants_per_question": round(sum(per_parent) / len(samples), 3), "methods": dict(methods),
        "not_shuffled": {}, "gold_letters": {}, "llm_calls": 0, "teacher_calls": 0,
        "seconds": round(time.perf_counter() - t0, 3)}
    warn_shortfall(stats, config.expansion)
    if out_dir is not None:
        save_samples(outputs, out_dir / AUGMENTED)
        finish_stage(out_dir, manifest, **stats)
    return AugmentResult(outputs, stats)


def _rewrite_all(samples, generator, teacher, config, done, store, keys, label, counter, show_progress) -> None:
    from tqdm.auto import tqdm

    finished = sum(1 for s in samples if s.id in done)
    bar = tqdm(total=len(samples), initial=finished, desc="augment", unit="q", disable=not show_progress,
               dynamic_ncols=True)
    try:
        for start in range(0, len(samples), config.batch_size):  # fixed batches: a rerun asks the same prompts
            batch = [s for s in samples[start:start + config.batch_size] if s.id not in done]
            if not batch:
                continue
            recs = [_record(p, keys[p.sample.id], label, config)
                    for p in _rewrite_batch(batch, generator, teacher, config, counter)]
            if store is not None:
                store.append(recs)
            for r in recs:
                done[r["id"]] = r
            bar.update(len(batch))
            parsed = sum(len(done[s.id]["variants"]) for s in samples if s.id in done)
            kept = sum(len(done[s.id]["kept"]) for s in samples if s.id in done)
            bar.set_postfix(kept=f"{kept}/{parsed}")
    finally:
        bar.close()


def drop_test_questions(samples: Sequence, test: Sequence) -> tuple[list, int]:
    """``samples`` without augmented variants that ask a held-out question (same text up to case and spacing, or
    the same arithmetic expression up to operand order), and how many were dropped. Originals always stay."""
    from openrft.data.expressions import canonical_key

    def text(s) -> str:
        return " ".join(s.question.lower().split())

    def expression(s) -> str | None:
        expr = (s.meta or {}).get("expression")
        try:
            return canonical_key(expr) if isinstance(expr, str) else None
        except (SyntaxError, ValueError):
            return None

    held = {text(s) for s in test} | {e for e in map(expression, test) if e is not None}
    kept = [s for s in samples if (s.meta or {}).get("variant", 0) == 0
            or (text(s) not in held and expression(s) not in held)]
    return kept, len(samples) - len(kept)
