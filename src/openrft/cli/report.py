"""``openrft report <run_dir>``: write report.md and report.html (with plots) for a run directory.

The report shows the run's method, recipe and status, wall time per stage and cell, the
accuracy table (OpenRFT Table 1 layout; maj@k and rerank@k when present), RL and SFT curves,
accuracy per task and against training-set size, and a few example completions.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a run directory written by 'openrft run' (holds run.json)")
    ap.add_argument("--examples", type=int, default=3, help="example completions shown (default: 3; 0 = none)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.report import IncompatibleRunError, RunDirError, write_run_report

    if args.examples < 0:
        print(f"openrft report: --examples must be >= 0, got {args.examples}", file=sys.stderr)
        return 2
    try:
        md, page = write_run_report(args.run_dir, examples=args.examples)
    except (RunDirError, IncompatibleRunError) as err:
        print(f"openrft report: {err}", file=sys.stderr)
        return 2
    print(f"report: {md}\n        {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
