"""``openrft rl``: reinforcement fine-tuning with outcome and process rewards.

PPO with a critic (``--estimator gae``, as in ReFT and OpenRFT) or critic-free estimators
(``grpo`` with ``--dr-grpo`` / ``--clip-high`` for Dr.GRPO / DAPO, ``rloo``, ``reinforce_pp``),
on a LoRA policy whose reference is the same model with the adapter off. Rewards:
``alpha * outcome + (1 - alpha) * f(step scores)`` with ``--prm`` (a PRM checkpoint, URL or
``judge:<model>``), or dense per-step rewards with ``--dense``.

Every RL setting is a flag; ``--config FILE.yaml`` reads the same keys (reward settings under
``reward:``, advantage settings under ``advantage:``), and flags override it. Rerunning continues from the last
checkpoint.

Example (CPU, bundled model and data)::

    openrft rl --data arithmetic --estimator grpo --steps 20 --out runs/arith/rl
"""

from __future__ import annotations

import argparse
import sys

from openrft.cli.options import (
    add_config_args, add_icl_args, examples_for_from_args, explicit_values, load_yaml_mapping,
)
from openrft.core.configs import build_config

ALIASES = {"n_samples": ["-n"], "lora_rank": ["--rank"]}
REWARD_ALIASES = {"functions": ["--reward-fn"]}
ADVANTAGE_ALIASES = {"whiten": ["--whiten-advantages"]}


def build_parser() -> argparse.ArgumentParser:
    from openrft.rewards.base import RewardSettings
    from openrft.rl.advantages import AdvantageSettings
    from openrft.rl.config import RLConfig

    ap = argparse.ArgumentParser(prog="openrft rl", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="stage directory, e.g. runs/x/rl")
    ap.add_argument("--config", default=None, help="YAML file of RL settings (field names below, with _)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar; one log line per step")
    add_config_args(ap.add_argument_group("RL settings"), RLConfig, ALIASES, skip=("output_dir",))
    add_config_args(ap.add_argument_group("advantage settings"), AdvantageSettings, ADVANTAGE_ALIASES)
    add_config_args(ap.add_argument_group("reward settings"), RewardSettings, REWARD_ALIASES)
    add_icl_args(ap)
    return ap


def make_config(args: argparse.Namespace):
    """Defaults, then the --config YAML, then explicit flags."""
    from openrft.rewards.base import RewardSettings
    from openrft.rl.advantages import AdvantageSettings
    from openrft.rl.config import RLConfig, move_old_keys

    values = load_yaml_mapping(args.config, "RL") if args.config else {}
    reward = dict(values.pop("reward", None) or {})
    values.update(explicit_values(args, RLConfig))
    reward.update(explicit_values(args, RewardSettings))
    advantage = explicit_values(args, AdvantageSettings)
    if advantage:  # over the YAML's advantage settings, its old flat keys moved there first
        values = move_old_keys(values, RLConfig.OLD_KEYS)
        values["advantage"] = dict(values.get("advantage") or {}) | advantage
    values["output_dir"] = args.out
    return build_config(RLConfig, values | {"reward": reward}, "--")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.models.loading import ModelNotFoundError
    from openrft.core.rundir import IncompatibleRunError, StageInputError
    from openrft.retrieval.embedder import EmbedderNotAvailableError
    from openrft.rewards.prm.base import PRMFormatError
    from openrft.rl.stage import run_rl

    try:
        config = make_config(args)
        reward = f"outcome x {config.reward.alpha:g} + PRM {config.reward.prm}" if config.reward.prm else "outcome"
        length = f"{config.epochs} epochs of" if config.epochs else f"{config.steps} steps x"
        print(f"rl: {config.estimator} on {config.model}{' + ' + config.adapter if config.adapter else ''}, "
              f"{length} {config.prompts_per_step} prompts x {config.n_samples} samples, "
              f"reward {reward}{' (dense)' if config.reward.dense else ''} -> {args.out}", file=sys.stderr)
        examples_for = examples_for_from_args(args, list(config.data))
        result = run_rl(config, args.out, show_progress=not args.quiet, examples_for=examples_for)
    except (StageInputError, IncompatibleRunError, ModelNotFoundError, PRMFormatError, FileNotFoundError,
            EmbedderNotAvailableError, ValueError) as err:
        print(f"openrft rl: {err}", file=sys.stderr)
        return 2
    if result.skipped:
        print(f"already finished with the same settings and inputs (see {result.out_dir / 'manifest.json'})")
    m = result.metrics
    if m:
        first, last = m[0], m[-1]
        print(f"steps: {len(m)}; rollout reward {first['reward']:.3f} -> {last['reward']:.3f}, "
              f"accuracy {first['accuracy']:.3f} -> {last['accuracy']:.3f}")
    print(f"adapter: {result.adapter_dir}")
    print(f"metrics: {result.out_dir / 'metrics.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
