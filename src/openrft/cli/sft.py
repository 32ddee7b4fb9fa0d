"""``openrft sft``: supervised warm-up on synthesized traces (OpenRFT 2.2.1), LoRA by default.

Every field of SFTStageConfig is a flag (``--learning-rate`` / ``--lr``, ``--lora-rank`` /
``--rank``, ...); ``--config FILE.yaml`` reads the same keys, and flags override it.
"""

from __future__ import annotations

import argparse
import sys

from openrft.cli.options import (
    add_config_args, add_icl_args, examples_for_from_args, explicit_values, load_yaml_mapping,
)
from openrft.core.configs import build_config

ALIASES = {"learning_rate": ["--lr"], "lora_rank": ["--rank"], "lora_alpha": ["--alpha"]}


def _config_cls():
    from openrft.sft.stage import SFTStageConfig

    return SFTStageConfig


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft sft", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", required=True,
                    help="traces.jsonl from 'openrft synthesize' (or the synthesize stage directory)")
    ap.add_argument("--out", required=True, help="stage directory, e.g. runs/x/sft")
    ap.add_argument("--config", default=None, help="YAML file of SFT settings (the field names below, with _)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    group = ap.add_argument_group("training settings (default: OpenRFT's SFT warm-up)")
    add_config_args(group, _config_cls(), ALIASES)
    add_icl_args(ap)
    return ap


def make_config(args: argparse.Namespace):
    """Defaults, then the --config YAML, then explicit flags."""
    cls = _config_cls()
    values: dict = load_yaml_mapping(args.config, "SFT") if args.config else {}
    values.update(explicit_values(args, cls))
    return build_config(cls, values, "--")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.models.loading import ModelNotFoundError
    from openrft.core.rundir import IncompatibleRunError, StageInputError
    from openrft.retrieval.embedder import EmbedderNotAvailableError
    from openrft.sft.stage import run_sft

    try:
        config = make_config(args)
        print(f"sft: {'full fine-tuning' if config.full else f'LoRA r={config.lora_rank}'} of {config.model} on "
              f"{args.traces}, {config.epochs:g} epochs, lr {config.learning_rate:g}, batch {config.batch_size} "
              f"-> {args.out}", file=sys.stderr)
        examples_for = examples_for_from_args(args, None)
        result = run_sft(args.traces, args.out, config, show_progress=not args.quiet, examples_for=examples_for)
    except (StageInputError, IncompatibleRunError, ModelNotFoundError, FileNotFoundError, ValueError,
            EmbedderNotAvailableError) as err:
        print(f"openrft sft: {err}", file=sys.stderr)
        return 2
    if result.skipped:
        print(f"already finished with the same settings and inputs (see {result.out_dir / 'manifest.json'})")

    def fmt(x):
        return "n/a" if x is None else f"{x:.4f}"

    print(f"examples: {result.examples}, optimizer steps: {result.steps}")
    print(f"training loss: start {fmt(result.first_loss)} -> end {fmt(result.last_loss)}")
    if result.loss_before is not None:
        print(f"completion loss on the training data: before {fmt(result.loss_before)} -> after {fmt(result.loss_after)}")
    print(f"{'model' if config.full else 'adapter'}: {result.weights_dir}")
    if result.merged_dir is not None:
        print(f"merged model: {result.merged_dir}")
    print(f"metrics: {result.out_dir / 'metrics.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
