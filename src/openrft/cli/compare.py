"""``openrft compare <run_dir>...``: method x task accuracy table over finished runs (OpenRFT Table 1 layout).

Rows are the runs' methods (from run.json), columns the evaluated tasks and Avg; the best of
each column is marked with *. When several runs give the same method and task, the latest
finished evaluation is used and a note names the others. Runs not finished are left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dirs", nargs="+", metavar="run_dir", help="run directories written by 'openrft run'")
    ap.add_argument("--out", default=None, metavar="PATH",
                    help="also write the table as Markdown to PATH and as JSON next to it (PATH with .json)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.core.rundir import atomic_write_json, atomic_write_text
    from openrft.report import IncompatibleRunError, RunDirError, compare

    try:
        table = compare(args.run_dirs)
    except (RunDirError, IncompatibleRunError) as err:
        print(f"openrft compare: {err}", file=sys.stderr)
        return 2
    text = table.markdown()
    print(text, end="")
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            print(f"openrft compare: --out {out} is a directory; give a file name such as {out / 'compare.md'}",
                  file=sys.stderr)
            return 2
        md_path = out.with_suffix(".md") if out.suffix == ".json" else out
        md = atomic_write_text(md_path, text)
        js = atomic_write_json(md_path.with_suffix(".json"), table.to_dict())
        print(f"\nwrote {md} and {js}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
