"""``openrft eval``: the Vanilla row (or any model's row) of the OpenRFT table."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from openrft.cli.options import (add_config_args, add_icl_args, config_from_args, examples_for_from_args,
                                 request_failure)


DEFAULT_DATA = "sciknoweval/chemical_calculation"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft eval", description=__doc__)
    ap.add_argument("--model", default="smollm2-135m",
                    help="bundled name (smollm2-135m), local checkpoint directory, or hub id (default: bundled SmolLM2)")
    ap.add_argument("--adapter", default=None,
                    help="LoRA adapter to apply on top of --model: its directory or an 'openrft sft' output directory")
    ap.add_argument("--data", nargs="+", action="extend", default=None,
                    help="bundled dataset names (see 'openrft data list'), files or directories; several allowed "
                         f"(default: {DEFAULT_DATA})")
    ap.add_argument("--split", default="test", help="split to evaluate (bundled data and split folders)")
    ap.add_argument("--limit", type=int, default=None, help="evaluate the first N items of each task")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding, one run (same as --temperature 0)")
    ap.add_argument("--long-questions", choices=["skip", "error"], default="skip",
                    help="a question too long for the model's context: skip it with a warning naming it (default: "
                         "the evaluation goes on) or stop with an error before the model loads (exact token counts: "
                         "before generating)")
    from openrft.evaluate.runner import EvalConfig

    add_config_args(ap.add_argument_group("evaluation settings (EvalConfig)"), EvalConfig)
    ap.add_argument("--backend", default="transformers", choices=["transformers", "openai", "vllm"])
    ap.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint for --backend openai")
    from openrft.models.backends.base import HTTPLimits

    add_config_args(ap.add_argument_group("HTTP limits (--backend openai)"), HTTPLimits)
    ap.add_argument("--batch-size", type=int, default=32, help="sequences decoded together (transformers backend)")
    ap.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), fp32, bf16, fp16")
    ap.add_argument("--label", default="Vanilla", help="method name for the table row")
    ap.add_argument("--out", default=None, help="output directory (default: runs/eval-<model>-<time>)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    add_icl_args(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.data = args.data or [DEFAULT_DATA]
    from openrft.data import DataError
    from openrft.data.lengths import drop_long_questions
    from openrft.data.loaders import load_sources
    from openrft.evaluate.rerank import load_reranker
    from openrft.evaluate.results import print_tables, write_report
    from openrft.evaluate.runner import EvalConfig, evaluate
    from openrft.models.backends import HTTPLimits, make_generator
    from openrft.models.http import RequestFailed
    from openrft.models.loading import ModelNotFoundError, context_window
    from openrft.core.rundir import IncompatibleRunError
    from openrft.retrieval.embedder import EmbedderNotAvailableError

    try:
        config = config_from_args(EvalConfig, args, **({"temperature": 0.0} if args.greedy else {}))
        samples = load_sources(args.data, split=args.split, limit_per_task=args.limit)
        samples = drop_long_questions(samples, context_window(args.model) if args.backend != "openai" else None,
                                      args.long_questions)
        if not samples:
            raise DataError(f"no samples to evaluate in {', '.join(args.data)} (split {args.split!r})")
        generator = make_generator(args.backend, args.model, base_url=args.base_url, batch_size=args.batch_size,
                                   dtype=args.dtype, cache_dir=os.path.join(args.out, "http-cache") if args.out else None,
                                   http=config_from_args(HTTPLimits, args))
        if args.adapter:
            generator = _with_adapter(generator, args.adapter)
        examples_for = examples_for_from_args(args, args.data)
        reranker = None
        if config.rerank:  # loaded before generating, so a bad checkpoint fails at once
            reranker = load_reranker(config.rerank, agg=config.rerank_agg, step_rule=config.step_rule,
                                     batch_size=config.rerank_batch_size)
    except (DataError, ModelNotFoundError, EmbedderNotAvailableError, ValueError) as err:
        print(f"openrft eval: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or f"runs/eval-{Path(args.model).name}-{time.strftime('%Y%m%d-%H%M%S')}")
    tasks = sorted({s.task for s in samples})
    print(f"evaluating {args.model} on {len(samples)} items ({len(tasks)} task(s)), n={config.n}, "
          f"temperature={config.temperature}, max_new_tokens={config.max_new_tokens}"
          f"{f', reranked by {config.rerank}' if config.rerank else ''} -> {out}", file=sys.stderr)
    try:
        from openrft.evaluate.runner import EvaluatedWeights
        from openrft.models.lora import resolve_adapter_dir

        model_name = EvaluatedWeights(args.model, str(resolve_adapter_dir(args.adapter)) if args.adapter else None,
                                      generator.precision)
        result = evaluate(generator, samples, config, out, label=args.label, model_name=model_name,
                          show_progress=not args.quiet, reranker=reranker, examples_for=examples_for,
                          long_questions=args.long_questions)
    except (IncompatibleRunError, DataError) as err:
        print(f"openrft eval: {err}", file=sys.stderr)
        return 2
    except RequestFailed as err:
        print(request_failure("eval", err, f"finished items are saved in {out / 'completions.jsonl'}, rerun the same "
                                           "command to resume"), file=sys.stderr)
        return 1
    finally:
        if reranker is not None:
            reranker.close()
    md, js = write_report([result], out)
    print_tables([result])
    print(f"completions: {out / 'completions.jsonl'}\nreport: {md}, {js}")
    return 0


def _with_adapter(generator, adapter: str):
    from openrft.models.lora import load_adapter

    if not hasattr(generator, "model"):
        raise ValueError("--adapter works with the transformers backend; serve the adapter for other backends")
    try:
        generator.model = load_adapter(generator.model, adapter, merge=True)
    except FileNotFoundError as err:
        raise ValueError(str(err)) from err
    return generator
