"""Counts of the augment stage for its manifest, the CLI summary and the run log, including how far the output
falls short of ``expansion`` samples per question (rewrites lost to validation after every re-ask)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

from openrft.augment.config import AugmentConfig
from openrft.augment.shuffle import shuffle_skip_reason
from openrft.data.sample import Sample

logger = logging.getLogger(__name__)


def shortfall(samples: Sequence[Sample], outputs: Sequence[Sample], expansion: int) -> dict[str, Any]:
    """How many samples each question is short of ``expansion`` (its original and kept variants, counted by
    ``meta.parent_id``): ``shortfall`` in all, per question on average, the number of questions short and
    ``short_questions`` (id -> missing samples, only those short).

    >>> q = Sample(id="q", task="t", question="What is 2 + 2?", answer="4")
    >>> shortfall([q], [q, q.replace(id="q#aug1", meta={"parent_id": "q"})], 6)
    {'shortfall': 4, 'shortfall_per_question': 4.0, 'questions_short': 1, 'short_questions': {'q': 4}}
    """
    emitted = Counter((s.meta or {}).get("parent_id", s.id) for s in outputs)
    short = {s.id: expansion - emitted[s.id] for s in samples if emitted[s.id] < expansion}
    total = sum(short.values())
    return {"shortfall": total, "shortfall_per_question": round(total / max(len(samples), 1), 3),
            "questions_short": len(short), "short_questions": short}


def warn_shortfall(stats: dict[str, Any], expansion: int) -> None:
    """Log the :func:`shortfall` in ``stats``, when there is one."""
    if stats["shortfall"]:
        logger.warning("augment: %d of %d questions are short of %d samples, %d samples in all (%.2f per question); "
                       "their ids are in the manifest's short_questions", stats["questions_short"], stats["samples_in"],
                       expansion, stats["shortfall"], stats["shortfall_per_question"])


def augment_stats(samples: Sequence[Sample], outputs: Sequence[Sample], records: Sequence[dict[str, Any]],
                  config: AugmentConfig) -> dict[str, Any]:
    """Counts for the manifest and the CLI summary; depend only on the records, so a resumed run reports the same."""
    variants = [v for r in records for v in r["variants"]]
    kept = sum(len(r["kept"]) for r in records)
    reasons = Counter(v["reason"] for v in variants if not v["kept"])
    failed_rules = Counter(f for v in variants for f in v["failed"])
    attempt_errors = Counter(a["error"] for r in records for a in r["attempts"] if a["error"])
    not_shuffled = Counter(shuffle_skip_reason(s) for s in samples if shuffle_skip_reason(s)) if config.shuffle \
        else Counter()
    return shortfall(samples, outputs, config.expansion) | {
        "samples_in": len(samples),
        "samples_out": len(outputs),
        "expansion": round(len(outputs) / len(samples), 3),
        "variants_requested": config.k * len(samples),
        "variants_parsed": len(variants),
        "variants_kept": kept,
        "kept_fraction": round(kept / len(variants), 4) if variants else None,
        "reasons": dict(reasons.most_common()),
        "failed_rules": dict(failed_rules.most_common()),
        "replies": sum(len(r["attempts"]) for r in records),
        "reply_errors": dict(attempt_errors.most_common()),
        "questions_without_variant": sum(1 for r in records if not r["kept"]),
        "variants_per_question": round(kept / len(samples), 3),
        "status": dict(Counter(r["status"] for r in records)),
        "methods": dict(Counter(s.meta["method"] for s in outputs)),
        "not_shuffled": dict(not_shuffled),
        "gold_letters": dict(sorted(Counter(s.answer for s in outputs if s.answer_type == "mcq").items())),
    }
