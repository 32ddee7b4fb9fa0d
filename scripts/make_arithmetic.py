"""Generate the bundled ``arithmetic`` dataset from reasoning-gym's ``basic_arithmetic``.

reasoning-gym is a generation-time tool only (``pip install reasoning-gym``); openrft does
not import it at run time. The output is fixed by the seed. One generator stream is drawn in
index order (one stream, not one per split: reasoning-gym seeds item ``i`` with ``seed + i``,
so two seeds would share items). An item whose expression was drawn before is skipped (the
same expression up to redundant parentheses and the order of the operands of ``+`` and
``*``: :func:`canonical_key`). Each new item goes to the split of its *numbers*
(:func:`numbers_key`; drawn at random, train with probability train/(train+test), the
first time those numbers occur), so ``3 + 5`` in train never meets ``5 - 3`` or ``3 * 5`` in
test: openrft's leakage check normalizes signs and operators away and would call those
duplicates. Items for a split that is already full are skipped.

Every gold answer is checked against an independent evaluation of the expression (an AST
walk over ints, + - * and unary minus; no ``eval``), and the script fails on a mismatch. Each item
also gets a worked solution in ``meta["rationale"]`` (:func:`worked_solution`: one line per
operation, tens split off two-digit operands), checked to end at the gold answer: the worked
replies few-shot examples show, and the gold CoT of ReFT-style SFT.

    .venv/bin/python scripts/make_arithmetic.py            # writes src/openrft/data/bundled/arithmetic/
    .venv/bin/python scripts/make_arithmetic.py --out /tmp/arith --parentheses   # a harder variant
"""

from __future__ import annotations

import argparse
import importlib.metadata
import random
import sys
from pathlib import Path

from openrft.data.expressions import canonical_key, evaluate_expression, worked_solution
from openrft.data.leakage import leakage_report, normalize_text
from openrft.data.loaders import save_samples
from openrft.data.sample import Sample

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "openrft" / "data" / "bundled" / "arithmetic"


def numbers_key(question: str) -> str:
    """The words of a question after openrft's normalization, as a set: signs and operators are dropped.

    >>> numbers_key("Calculate 5 - 3.") == numbers_key("Calculate 3 * 5.")
    True
    """
    return " ".join(sorted(set(normalize_text(question).split())))


def generate(args: argparse.Namespace) -> tuple[list[Sample], list[Sample], dict]:
    import reasoning_gym

    config = {"min_terms": args.min_terms, "max_terms": args.max_terms, "min_digits": args.min_digits,
              "max_digits": args.max_digits, "operators": list(args.operators),
              "allow_parentheses": args.parentheses, "allow_negation": args.parentheses,
              "format_style": "simple", "whitespace": "single", "seed": args.seed}
    want = {"train": args.train, "test": args.test}
    pool = (args.train + args.test) * 20
    ds = reasoning_gym.create_dataset("basic_arithmetic", size=pool, **config)
    generator = {"library": "reasoning-gym", "version": importlib.metadata.version("reasoning-gym"),
                 "dataset": "basic_arithmetic", "config": config}
    rng = random.Random(args.seed)
    seen: set[str] = set()
    side: dict[str, str] = {}  # numbers key -> split
    picked: dict[str, list[Sample]] = {"train": [], "test": []}
    for idx in range(pool):
        item = ds[idx]
        expr = item["metadata"]["expression"]
        key = canonical_key(expr)
        if key in seen:
            continue
        seen.add(key)
        gold = evaluate_expression(expr)
        if str(gold) != item["answer"]:
            raise SystemExit(f"item {idx}: reasoning-gym says {item['answer']} for {expr!r}, evaluation gives {gold}")
        nkey = numbers_key(item["question"])
        split = side.setdefault(nkey, "train" if rng.random() < args.train / (args.train + args.test) else "test")
        if len(picked[split]) == want[split]:
            continue
        rationale = worked_solution(expr)
        if not rationale.endswith(f"= {gold}"):
            raise SystemExit(f"item {idx}: the worked solution of {expr!r} ends {rationale[-20:]!r}, not {gold}")
        meta = {"expression": expr, "rationale": rationale, "source_index": idx, "generator": generator}
        picked[split].append(Sample(id=f"arithmetic/{split}/{len(picked[split])}", task="arithmetic",
                                    question=item["question"], answer=str(gold), answer_type="numeric", meta=meta))
        if all(len(picked[s]) == want[s] for s in want):
            break
    else:
        raise SystemExit(f"only {len(picked['train'])}/{len(picked['test'])} train/test questions among {pool} "
                         "generated; widen the config")
    train, test = picked["train"], picked["test"]
    return train, test, generator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (train.jsonl, test.jsonl)")
    ap.add_argument("--train", type=int, default=100, help="train items")
    ap.add_argument("--test", type=int, default=300, help="test items")
    ap.add_argument("--seed", type=int, default=20240601, help="reasoning-gym seed")
    ap.add_argument("--min-terms", type=int, default=2)
    ap.add_argument("--max-terms", type=int, default=2)
    ap.add_argument("--min-digits", type=int, default=1)
    ap.add_argument("--max-digits", type=int, default=2)
    ap.add_argument("--parentheses", action="store_true",
                    help="reasoning-gym's 'complex' generator: parentheses, negation and negative operands "
                         "(default: the 'simple' one, operands 0..10**digits)")
    ap.add_argument("--operators", default="+-*", help="operator characters, from + - *")
    args = ap.parse_args(argv)
    if set(args.operators) - set("+-*"):
        ap.error("--operators: only + - * (reasoning-gym's '/' is floor division, not a plain number task)")
    train, test, generator = generate(args)
    # Raw strings: openrft's default normalization drops signs and operators ("3 + 5" ~ "3 * 5").
    rep = leakage_report(train, test, normalize=False, threshold=None)
    if rep.n_leaked or any(rep.within.values()):
        raise SystemExit(f"duplicate questions: within {rep.within}, across {rep.cross}")
    norm = leakage_report(train, test)  # what `openrft data check` reports: nothing may cross the split
    if norm.n_leaked or any(p.a[0] != p.b[0] for p in norm.near):
        raise SystemExit(f"train/test share normalized questions: {norm.cross}")
    for name, data in (("train", train), ("test", test)):
        path = save_samples(data, args.out / f"{name}.jsonl")
        path.chmod(0o644)  # package data: readable by all (the atomic temp file is private)
        print(f"{path}: {len(data)} items", file=sys.stderr)
    print(f"config: {generator}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
