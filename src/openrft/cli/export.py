"""``openrft export verl|openrlhf``: hand openrft's prompts and reward to a cluster RL engine.

Writes the engine's data files (verl: train/test parquet; OpenRLHF: train/test JSONL), a reward
module that grades with openrft's own task graders (optionally combined with a remote PRM:
``alpha * outcome + (1 - alpha) * f(step scores)``), a README with the engine's command-line
settings for these files, and ``openrft_export.json`` (settings, counts, checksums).

Examples::

    openrft export verl --data arithmetic --out exports/arith
    openrft export openrlhf --data sciknoweval/all --out exports/ske --prm-url http://gpu-box:8765/score --alpha 0.7
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
    add_config_args(ap.add_argument_group("export settings"), ExportConfig)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.data.sample import DataError
    from openrft.export import ENGINES
    from openrft.export.common import ExportConfig, ExportError

    try:
        config = ExportConfig(**explicit_values(args, ExportConfig))
        result = ENGINES[args.engine](config, args.out)
    except (ExportError, DataError) as err:
        print(f"openrft export: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{n} {name}" for name, n in result.counts.items())
    print(f"wrote {counts} prompts and the reward module to {result.out_dir}\n")
    print(result.usage, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
