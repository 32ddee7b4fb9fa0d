"""``openrft augment``: rewrite questions into meaning-preserving variants (LLM) and shuffle options.

Writes ``augmented.jsonl`` (samples, provenance in ``meta``), ``rewrites.jsonl`` (raw replies and
the verdict on every variant) and ``manifest.json`` into ``--out``; an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from openrft.augment.stage import AUGMENTED, REWRITES, TEMPLATE, AugmentConfig
from openrft.cli.options import add_config_args, config_from_args, request_failure

DEFAULT_REWRITER = "smollm2-135m"



def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft augment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", action="extend", required=True,
                    help="bundled dataset names (see 'openrft data list'), files or directories")
    ap.add_argument("--split", default="train", help="split to augment (bundled data and split folders)")
    ap.add_argument("--limit", type=int, default=None, help="augment the first N questions of each task")
    ap.add_argument("--out", required=True, help="stage directory, e.g. runs/x/augment")
    ap.add_argument("--dtype", default="auto", help="transformers backend: auto, fp32, bf16, fp16")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_args(ap.add_argument_group("augmentation settings (AugmentConfig)"), AugmentConfig)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.data import DataError
    from openrft.data.loaders import load_sources
    from openrft.models.backends import HTTPLimits, make_generator
    from openrft.models.http import RequestFailed
    from openrft.models.loading import ModelNotFoundError
    from openrft.core.rundir import IncompatibleRunError

    out = Path(args.out)
    try:
        config = config_from_args(AugmentConfig, args)
        samples = load_sources(args.data, split=args.split, limit_per_task=args.limit)
        generator = teacher = None
        if config.k > 0 and config.backend != TEMPLATE:
            if config.model is None:  # a rewriter is needed and none is named: the bundled model
                config = dataclasses.replace(config, model=DEFAULT_REWRITER)
            generator = make_generator(config.backend, config.model, base_url=config.base_url,
                                       batch_size=config.batch_size, dtype=args.dtype,
                                       cache_dir=os.path.join(out, "http-cache"),
                                       http=HTTPLimits.of(config))
        if config.teacher_check and (config.teacher_model or config.teacher_backend or config.teacher_base_url):
            teacher = make_generator(config.teacher_backend or config.backend, config.teacher_model or config.model,
                                     base_url=config.teacher_base_url or config.base_url,
                                     batch_size=config.batch_size, dtype=args.dtype,
                                     cache_dir=os.path.join(out, "http-cache"),
                                     http=HTTPLimits.of(config))
    except (DataError, ModelNotFoundError, ValueError) as err:
        print(f"openrft augment: {err}", file=sys.stderr)
        return 2
    from openrft.augment.stage import run_augment

    how = (f"verified renumbered/reworded variants (template), k={config.k}" if config.backend == TEMPLATE
           else f"rewriting with {config.backend}:{config.model}, k={config.k}") if config.k else "no rewriting (k=0)"
    print(f"augmenting {len(samples)} questions: {how}, expansion={config.expansion} -> {out}", file=sys.stderr)
    try:
        result = run_augment(samples, generator, config, out, teacher=teacher, show_progress=not args.quiet)
    except IncompatibleRunError as err:
        print(f"openrft augment: {err}", file=sys.stderr)
        return 2
    except RequestFailed as err:
        print(request_failure("augment", err, f"finished questions are saved in {out / REWRITES}, rerun the same "
                                              "command to resume"), file=sys.stderr)
        return 1
    print(format_summary(result.stats, out))
    return 0


def format_summary(stats: dict, out: Path) -> str:
    """The lines printed at the end of a run."""
    lines = [f"samples: {stats['samples_in']} in -> {stats['samples_out']} out ({stats['expansion']}x)"]
    if stats["variants_requested"]:
        frac = stats["kept_fraction"]
        lines.append(f"variants: {stats['variants_requested']} asked, {stats['variants_parsed']} parsed, "
                     f"{stats['variants_kept']} kept ({'n/a' if frac is None else f'{frac:.1%}'} of parsed); "
                     f"questions without a kept variant: {stats['questions_without_variant']}")
        if stats["reasons"]:
            lines.append("dropped: " + ", ".join(f"{r} {n}" for r, n in stats["reasons"].items()))
        if stats["reply_errors"]:
            lines.append("unusable replies: " + ", ".join(f"{r} {n}" for r, n in stats["reply_errors"].items()))
    if stats.get("shortfall"):  # manifests written before the shortfall was counted have none
        lines.append(f"short of the expansion: {stats['shortfall']} samples over {stats['questions_short']} "
                     f"questions ({stats['shortfall_per_question']} per question; ids in the manifest)")
    lines.append("methods: " + ", ".join(f"{m} {n}" for m, n in stats["methods"].items()))
    if stats["not_shuffled"]:
        lines.append("options not shuffled: " + ", ".join(f"{r} {n}" for r, n in stats["not_shuffled"].items()))
    if stats["gold_letters"]:
        lines.append("gold letters: " + " ".join(f"{k} {v}" for k, v in stats["gold_letters"].items()))
    verdicts = f"  (per-variant verdicts: {out / REWRITES})" if (out / REWRITES).exists() else ""  # LLM rewriters
    lines.append(f"output: {out / AUGMENTED}{verdicts}")
    return "\n".join(lines)
