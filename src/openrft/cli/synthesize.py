"""``openrft synthesize``: sample reasoning traces until they reach the gold answer (OpenRFT 2.2.1)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from openrft.cli.options import (add_config_args, add_icl_args, config_from_args, examples_for_from_args,
                                 request_failure)

DEFAULT_MODEL = "smollm2-135m"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft synthesize", description=__doc__)
    ap.add_argument("--data", nargs="+", action="extend", required=True,
                    help="bundled dataset names (see 'openrft data list'), files or directories; several allowed")
    ap.add_argument("--split", default="train", help="split to read (bundled data and split folders)")
    ap.add_argument("--limit", type=int, default=None, help="use the first N items of each task")
    from openrft.synthesize.stage import SynthesizeConfig

    add_config_args(ap.add_argument_group("synthesis settings (SynthesizeConfig)"), SynthesizeConfig)
    ap.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16")
    ap.add_argument("--out", default=None, help="stage directory (default: runs/synthesize-<model>-<time>)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    add_icl_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.data import DataError
    from openrft.data.loaders import load_sources
    from openrft.models.http import RequestFailed
    from openrft.models.loading import ModelNotFoundError
    from openrft.core.rundir import IncompatibleRunError, StageInputError
    from openrft.retrieval.embedder import EmbedderNotAvailableError
    from openrft.synthesize.stage import SynthesizeConfig, build_generator, run_synthesize, task_summary

    try:
        samples = load_sources(args.data, split=args.split, limit_per_task=args.limit)
        config = config_from_args(SynthesizeConfig, args)
        if config.source == "model" and not config.sampled_model:  # nothing named: the bundled model samples
            config = dataclasses.replace(config, model=DEFAULT_MODEL)
        sampled = Path(config.sampled_model or "gold").name
        out = Path(args.out or f"runs/synthesize-{sampled}-{time.strftime('%Y%m%d-%H%M%S')}")
        generator = None if config.source == "gold" else \
            build_generator(config, cache_dir=os.path.join(out, "http-cache"), dtype=args.dtype)
        examples_for = examples_for_from_args(args, args.data)
    except (DataError, ModelNotFoundError, EmbedderNotAvailableError, ValueError) as err:
        print(f"openrft synthesize: {err}", file=sys.stderr)
        return 2
    print(f"traces from the dataset's annotated rationales for {len(samples)} items -> {out}" if generator is None else
          f"synthesizing with {config.sampled_model} ({config.backend}) on {len(samples)} items, "
          f"budget={config.budget}, rounds={','.join(map(str, config.rounds))}, m={config.m}, "
          f"fallback={config.fallback} -> {out}", file=sys.stderr)
    try:
        result = run_synthesize(samples, generator, config, out, show_progress=not args.quiet,
                                examples_for=examples_for)
    except (IncompatibleRunError, StageInputError) as err:
        print(f"openrft synthesize: {err}", file=sys.stderr)
        return 2
    except RequestFailed as err:
        print(request_failure("synthesize", err, f"finished questions are saved in {out / 'traces.jsonl'}, rerun the "
                                                 "same command to resume"), file=sys.stderr)
        return 1
    finally:
        if generator is not None:
            generator.close()
    print_summary(task_summary(result.records), result.stats)
    print(f"traces: {out / 'traces.jsonl'}\nmanifest: {out / 'manifest.json'}")
    return 0


def print_summary(rows: list[dict], stats: dict, console=None) -> None:
    """The per-task table: samples, solved fraction, mean attempts, fallback fraction, mean pass rate (per question)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Synthesized traces")
    for h in ("Task", "Samples", "Solved", "Attempts", "Fallback", "Dropped", "Pass rate"):
        table.add_column(h, justify="left" if h == "Task" else "right", no_wrap=True)
    for r in rows + [{"task": "All"} | stats]:
        table.add_row(r["task"], str(r["samples"]), f"{100 * r['solved_fraction']:.1f}%", f"{r['mean_attempts']:.1f}",
                      f"{100 * r['fallback_fraction']:.1f}%", str(r["dropped"]), f"{100 * r['mean_pass_rate']:.1f}%")
    console = console or Console()
    if not console.is_terminal:  # piped output: wide enough for whole task names rather than 80 columns
        console.width = max(console.width, max(len(r["task"]) for r in rows + [{"task": ""}]) + 70)
    console.print(table)
    if stats.get("seconds") is not None:
        print(f"{stats.get('completions_generated', 0)} completions in {stats['seconds']:.1f}s "
              f"({stats.get('completions_per_s') or 0:.2f}/s), {stats.get('traces_per_s') or 0:.2f} traces/s; "
              f"attempts histogram {stats.get('attempts_histogram')}")
