"""``openrft orm train``: train an outcome reward model (ReFT's reranker) that scores a completion's correctness.

Training data: completions sampled from the policy (``--data SAMPLES --model BASE
[--adapter SFT_DIR] -n 4``) and graded by each task's grader, or a JSONL of
``{question, completion, label}`` (``--labels``). Every field of ORMTrainConfig is a flag;
``--config FILE.yaml`` reads the same keys, and flags override it.

  openrft orm train --data gsm8k --split train --adapter runs/x/sft --init-adapter runs/x/sft -n 8 --out runs/x/orm
"""

from __future__ import annotations

import argparse
import sys

from openrft.cli.options import add_config_args, config_from_args
from openrft.cli.prm import _fmt

ALIASES = {"learning_rate": ["--lr"], "lora_rank": ["--rank"], "lora_alpha": ["--alpha"], "model": ["-m"], "n": ["-n"]}


def _config_cls():
    from openrft.reward_models.orm_train import ORMTrainConfig

    return ORMTrainConfig


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft orm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train an outcome reward model", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--out", required=True, help="stage directory, e.g. runs/x/orm (checkpoint in <out>/checkpoint)")
    train.add_argument("--config", default=None, help="YAML file of settings (the field names below, with _)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(train.add_argument_group("settings"), _config_cls(), ALIASES)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.data.sample import DataError
    from openrft.models.loading import ModelNotFoundError
    from openrft.core.rundir import IncompatibleRunError, StageInputError
    from openrft.reward_models.orm_train import run_orm_train
    from openrft.rewards.prm.base import PRMFormatError

    try:
        config = config_from_args(_config_cls(), args)
        source = ", ".join([*config.labels, *(f"{d} (n={config.n} samples)" for d in config.data)])
        print(f"orm train: {'full fine-tuning' if config.full else f'LoRA r={config.lora_rank}'} of {config.model} on "
              f"{source}, {config.epochs} epochs, lr {config.learning_rate:g} -> {args.out}", file=sys.stderr)
        result = run_orm_train(config, args.out, show_progress=not args.quiet,
                               log=lambda msg: print(msg, file=sys.stderr))
    except (DataError, StageInputError, IncompatibleRunError, ModelNotFoundError, PRMFormatError, FileNotFoundError,
            ValueError) as err:
        print(f"openrft orm: {err}", file=sys.stderr)
        return 2
    if result.skipped:
        print(f"already finished with the same settings and data (see {result.out_dir / 'manifest.json'})")
    held, rerank = result.metrics["held_out"], result.metrics["rerank"]
    print(f"held-out completions: {held['count']}; accuracy {_fmt(held['accuracy'])}, majority baseline "
          f"{_fmt(held['majority_baseline'])}, AUC {_fmt(held['auc'])}")
    print(f"rerank on {rerank['questions']} held-out questions: top-scored right {_fmt(rerank['rerank_accuracy'])}, "
          f"mean {_fmt(rerank['mean_accuracy'])}, any right {_fmt(rerank['oracle_accuracy'])}")
    print(f"checkpoint: {result.checkpoint_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
