"""``openrft sft``: supervised warm-up on synthesized traces (OpenRFT 2.2.1), LoRA by default.

Every field of SFTStageConfig is a flag (``--learning-rate`` / ``--lr``, ``--lora-rank`` /
``--rank``, ...); ``--config FILE.yaml`` reads the same keys, and flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

ALIASES = {"learning_rate": ["--lr"], "lora_rank": ["--rank"], "lora_alpha": ["--alpha"]}


def _field_type(f: dataclasses.Field) -> type:
    hint = typing.get_type_hints(_config_cls())[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


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
    for f in dataclasses.fields(_config_cls()):
        flags = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
        help_ = f.metadata.get("help", "")
        if "default" not in help_:
            help_ += f" (default: {f.default})"
        kind = _field_type(f)
        if kind is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        else:
            group.add_argument(*flags, dest=f.name, type=kind, default=None, help=help_)
    return ap


def make_config(args: argparse.Namespace):
    """Defaults, then the --config YAML, then explicit flags."""
    cls = _config_cls()
    values: dict = {}
    if args.config:
        import yaml

        loaded = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping of SFT settings, got {type(loaded).__name__}")
        values.update({k.replace("-", "_"): v for k, v in loaded.items()})
    for f in dataclasses.fields(cls):
        if getattr(args, f.name) is not None:
            values[f.name] = getattr(args, f.name)
    return cls.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.models.loading import ModelNotFoundError
    from openrft.pipeline.rundir import IncompatibleRunError, StageInputError
    from openrft.sft.stage import run_sft

    try:
        config = make_config(args)
        print(f"sft: {'full fine-tuning' if config.full else f'LoRA r={config.lora_rank}'} of {config.model} on "
              f"{args.traces}, {config.epochs:g} epochs, lr {config.learning_rate:g}, batch {config.batch_size} "
              f"-> {args.out}", file=sys.stderr)
        result = run_sft(args.traces, args.out, config, show_progress=not args.quiet)
    except (StageInputError, IncompatibleRunError, ModelNotFoundError, FileNotFoundError, ValueError) as err:
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
