"""``openrft data``: list bundled datasets, check a dataset for leakage and duplicates, show samples."""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft data", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="bundled dataset names, their splits with record counts, and licences")
    check = sub.add_parser("check", help="train/test leakage, repeated and near-duplicate questions")
    check.add_argument("data", help="bundled name, file or directory with split folders")
    check.add_argument("--train-split", default="train")
    check.add_argument("--test-split", default="test")
    check.add_argument("--threshold", type=float, default=0.9, help="token Jaccard for near duplicates")
    check.add_argument("--json", action="store_true", help="print the full report as JSON")
    show = sub.add_parser("show", help="print a few samples as loaded (the Sample records)")
    show.add_argument("data")
    show.add_argument("--split", default="test")
    show.add_argument("--limit", type=int, default=3)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.data import DataError
    from openrft.data.bundled import get_bundled, list_bundled
    from openrft.data.leakage import leakage_report
    from openrft.data.loaders import has_splits, load_samples

    try:
        if args.cmd == "list":
            for name in list_bundled():
                ds = get_bundled(name)
                counts = ", ".join(f"{split} {n:,}" for split, n in ds.records.items())
                print(f"{name:<45} {counts:<24} {ds.description}\n{'':<45} licence: {ds.licence}")
        elif args.cmd == "show":
            for s in load_samples(args.data, split=args.split, limit=args.limit):
                print(json.dumps(s.to_dict(), ensure_ascii=False, indent=2))
        else:
            if has_splits(args.data):
                train = load_samples(args.data, split=args.train_split)
                test = load_samples(args.data, split=args.test_split)
            else:  # one set of samples: compared with itself, every sample would look leaked
                train, test = [], load_samples(args.data)
                print(f"openrft data: {args.data} holds one set of samples, not train/test splits: checking "
                      "duplicates within it (for leakage, name a folder with split subfolders or a bundled dataset)",
                      file=sys.stderr)
            report = leakage_report(train, test, threshold=args.threshold)
            print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if args.json else report.summary())
    except DataError as err:
        print(f"openrft data: {err}", file=sys.stderr)
        return 2
    return 0
