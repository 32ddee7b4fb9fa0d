"""``openrft prm train``: train a value-head process reward model (Skywork-o1-Open-PRM format) on step labels.

Labels come from JSONL files (``--labels``), CHAMP's first-wrong-step annotations
(``--champ``), or Math-Shepherd style estimation from the policy's rollouts
(``--auto-label --data SAMPLES [--adapter SFT_DIR]``). Every field of PRMTrainConfig is
a flag; ``--config FILE.yaml`` reads the same keys, and flags override it. ``--step-token``
reads ``\\n`` as a newline (the default, Skywork's step token).

  openrft prm train --labels steps.jsonl --out runs/x/prm
  openrft prm train --auto-label --data sciknoweval/chemical_calculation --adapter runs/x/sft --out runs/x/prm

``openrft prm serve`` serves a PRM over HTTP (openrft's scoring protocol, :mod:`openrft.rewards.prm.protocol`):
what ``--prm http://host:port/score`` in ``openrft rl``/``eval`` and ``openrft export --prm-url`` score with,
e.g. an engine's reward on a cluster scored by a PRM on a GPU box:

  openrft prm serve --prm runs/x/prm --host 0.0.0.0 --port 8765
"""

from __future__ import annotations

import argparse
import sys

from openrft.cli.options import add_config_args, config_from_args

ALIASES = {"learning_rate": ["--lr"], "lora_rank": ["--rank"], "lora_alpha": ["--alpha"], "model": ["-m"]}


def _config_cls():
    from openrft.reward_models.prm_train import PRMTrainConfig

    return PRMTrainConfig


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft prm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a value-head PRM on step labels", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--out", required=True, help="stage directory, e.g. runs/x/prm (checkpoint in <out>/checkpoint)")
    train.add_argument("--config", default=None, help="YAML file of settings (the field names below, with _)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(train.add_argument_group("settings"), _config_cls(), ALIASES)
    serve = sub.add_parser("serve", help="serve a PRM over HTTP for remote scoring (rl --prm URL, export --prm-url)")
    serve.add_argument("--prm", required=True,
                       help="the PRM: checkpoint folder (a prm stage's, format detected), hub id, or judge:<model>")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    serve.add_argument("--format", default=None, help="force the checkpoint format: value_head|token_class|math_shepherd")
    serve.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    serve.add_argument("--dtype", default=None, help="auto|fp32|bf16|fp16")
    serve.add_argument("--batch-size", type=int, default=8, help="completions (judge: step prompts) per forward pass")
    return ap


def _serve(args: argparse.Namespace) -> int:
    from openrft.models.loading import ModelNotFoundError
    from openrft.rewards.prm.base import PRMFormatError
    from openrft.rewards.prm.loader import load_scorer
    from openrft.rewards.prm.remote import make_scorer_server

    try:
        scorer = load_scorer(args.prm, device=args.device, dtype=args.dtype, format=args.format,
                             batch_size=args.batch_size)
        server = make_scorer_server(scorer, host=args.host, port=args.port)
    except (PRMFormatError, ModelNotFoundError, OSError, ValueError) as err:
        print(f"openrft prm serve: {err}", file=sys.stderr)
        return 2
    print(f"serving {args.prm} at {server.url}/score (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        scorer.close()
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.step_token is not None:
        args.step_token = args.step_token.replace("\\n", "\n").replace("\\t", "\t")
    from openrft.data.sample import DataError
    from openrft.models.loading import ModelNotFoundError
    from openrft.core.rundir import IncompatibleRunError, StageInputError
    from openrft.rewards.prm.base import PRMFormatError
    from openrft.reward_models.prm_train import run_prm_train

    try:
        config = config_from_args(_config_cls(), args)
        sources = [*(["labels " + ", ".join(config.labels)] if config.labels else []),
                   *(["CHAMP"] if config.champ else []),
                   *([f"auto-labelled {', '.join(config.data)}"] if config.auto_label else [])]
        print(f"prm train: {'full fine-tuning' if config.full else f'LoRA r={config.lora_rank}'} of {config.model} "
              f"on {'; '.join(sources)}, {config.epochs} epochs, lr {config.learning_rate:g} -> {args.out}",
              file=sys.stderr)
        result = run_prm_train(config, args.out, show_progress=not args.quiet,
                               log=lambda msg: print(msg, file=sys.stderr))
    except (DataError, StageInputError, IncompatibleRunError, ModelNotFoundError, PRMFormatError, FileNotFoundError,
            ImportError, ValueError) as err:
        print(f"openrft prm: {err}", file=sys.stderr)
        return 2
    if result.skipped:
        print(f"already finished with the same settings and labels (see {result.out_dir / 'manifest.json'})")
    held, before = result.metrics["held_out"], result.metrics["held_out_before_training"]
    print(f"held-out steps: {held['count']}; accuracy {_fmt(held['accuracy'])} (before training "
          f"{_fmt(before['accuracy'])}), majority baseline {_fmt(held['majority_baseline'])}, AUC {_fmt(held['auc'])}")
    print(f"training loss: {_fmt(result.metrics['first_loss'])} -> {_fmt(result.metrics['last_loss'])} in "
          f"{result.metrics['steps']} steps, {result.metrics['train_seconds']:.1f}s")
    print(f"checkpoint: {result.checkpoint_dir}")
    print(f"metrics: {result.out_dir / 'metrics.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
