"""``openrft export verl|openrlhf``: hand openrft's prompts, reward and RL settings to a cluster RL engine.

Writes the engine's data files (verl: train/test parquet; OpenRLHF: train/test JSONL), a reward
module that grades with openrft's own task graders (optionally combined with a remote PRM:
``alpha * outcome + (1 - alpha) * f(step scores)``) and carries them in the folder (it needs only
Python's standard library), a launch script with the engine's settings for the RL run (verl:
``run_verl.sh``, hydra overrides; OpenRLHF: ``run_openrlhf.sh``, ``train_ppo_ray`` flags), a README
and ``openrft_export.json`` (settings, counts, checksums).

``--recipe`` takes the data, the RL settings and the reward settings from a recipe's ``rl`` stage
(``--set`` overrides recipe keys as in ``openrft run``); flags given here win over the recipe's.
Without it, the launch script carries ``openrft rl``'s defaults.

Examples::

    openrft export verl --recipe recipes/paper/reft.yaml --out exports/reft
    openrft export openrlhf --recipe recipes/paper/sft_rl_prm.yaml --prm-url http://gpu-box:8765/score --out exports/prm
    openrft export verl --data arithmetic --out exports/arith
    openrft export verl --data gsm8k --split test --test-split none --out exports/gsm8k
"""

from __future__ import annotations

import argparse
import sys

from openrft.cli.options import add_config_args, explicit_values


def build_parser() -> argparse.ArgumentParser:
    from openrft.export.common import ExportConfig

    ap = argparse.ArgumentParser(prog="openrft export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", choices=["verl", "openrlhf"], help="the RL engine that reads the export")
    ap.add_argument("--out", required=True, help="output folder: new or empty (or pass --overwrite)")
    ap.add_argument("--recipe", default=None, help="recipe YAML whose rl stage, data and reward the export carries")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key (repeatable): rl.lr=1e-5, train_size=200, icl=null")
    add_config_args(ap.add_argument_group("export settings"), ExportConfig)
    return ap


def _from_recipe(args: argparse.Namespace):
    """``(ExportConfig values, plan, splits)`` of ``--recipe`` (the flags given here win), or of the flags alone."""
    from openrft.export.common import ExportConfig, ExportError

    explicit = explicit_values(args, ExportConfig)
    if not args.recipe:
        if args.overrides:
            raise ExportError("--set overrides recipe keys: give --recipe")
        return explicit, None, None
    from openrft.pipeline.engine_export import recipe_export
    from openrft.pipeline.recipe import load_recipe

    values, plan, splits = recipe_export(load_recipe(args.recipe, args.overrides))
    if "data" in explicit:  # the flags' data replace the recipe's samples
        splits = None
    return values | explicit, plan, splits


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.core.rundir import StageInputError
    from openrft.data.sample import DataError
    from openrft.export import ENGINES
    from openrft.export.common import ExportConfig, ExportError
    from openrft.pipeline.recipe import RecipeError

    try:
        values, plan, splits = _from_recipe(args)
        config = ExportConfig(**values)
        result = ENGINES[args.engine](config, args.out, plan, splits)
    except (ExportError, DataError, RecipeError, StageInputError) as err:
        print(f"openrft export: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{n} {name}" for name, n in result.counts.items())
    print(f"wrote {counts} prompts, the reward module and the launch script to {result.out_dir}\n")
    print(result.usage, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
