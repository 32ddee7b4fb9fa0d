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
import ast
import importlib.metadata
import operator
import random
import sys
from pathlib import Path

from openrft.data.leakage import leakage_report, normalize_text
from openrft.data.loaders import save_samples
from openrft.data.sample import Sample

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "openrft" / "data" / "bundled" / "arithmetic"
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
_OP_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
_OP_NODES = {v: k for k, v in _OP_SYMBOLS.items()}


def evaluate_expression(expr: str) -> int:
    """Integer value of an expression made of ints, ``+ - *``, unary minus and parentheses.

    >>> evaluate_expression("-( 32 - -75 )"), evaluate_expression("( -9 - 8 ) * 2")
    (-107, -34)
    """

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"unsupported syntax {ast.dump(node)} in {expr!r}")

    return walk(ast.parse(expr, mode="eval"))


def _op_line(a: int, op: str, b: int) -> str:
    """One operation worked the way a person does it in their head: split off the tens of a two-digit
    operand, and turn ``a - b`` with ``b > a`` into ``-(b - a)``.

    >>> _op_line(46, "*", 42), _op_line(15, "+", 77)
    ('46 * 42 = 46 * 40 + 46 * 2 = 1840 + 92 = 1932', '15 + 77 = 15 + 70 + 7 = 85 + 7 = 92')
    >>> _op_line(53, "-", 60)
    '53 - 60 = -(60 - 53), and 60 - 53 = 60 - 50 - 3 = 10 - 3 = 7, so 53 - 60 = -7'
    """
    r = _BINOPS[_OP_NODES[op]](a, b)
    if a < 0 or b < 0:
        return f"{a} {op} {b} = {r}"
    if op == "-" and b > a:
        return f"{a} - {b} = -({b} - {a}), and {_op_line(b, '-', a)}, so {a} - {b} = {r}"
    if op in "+-" and a >= 10 and b >= 10 and b % 10:
        tens, ones = b - b % 10, b % 10
        return f"{a} {op} {b} = {a} {op} {tens} {op} {ones} = {_BINOPS[_OP_NODES[op]](a, tens)} {op} {ones} = {r}"
    if op == "*":
        big, small = (a, b) if a >= b else (b, a)
        if small >= 10 and small % 10:
            tens, ones = small - small % 10, small % 10
            return f"{a} * {b} = {big} * {tens} + {big} * {ones} = {big * tens} + {big * ones} = {r}"
        if small < 10 and big >= 10 and big % 10:
            tens, ones = big - big % 10, big % 10
            return f"{a} * {b} = {tens} * {small} + {ones} * {small} = {tens * small} + {ones * small} = {r}"
    return f"{a} {op} {b} = {r}"


def worked_solution(expr: str) -> str:
    """A step-by-step solution, one line per operation in evaluation order (stored as ``meta["rationale"]``,
    the worked solution few-shot examples show and ReFT-style gold-CoT SFT trains on).

    >>> worked_solution("71 * 2")
    '71 * 2 = 70 * 2 + 1 * 2 = 140 + 2 = 142'
    >>> print(worked_solution("( 3 + 4 ) * -2"))
    3 + 4 = 7
    7 * -2 = -14
    """
    lines: list[str] = []

    def walk(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            a, b = walk(node.left), walk(node.right)
            lines.append(_op_line(a, _OP_SYMBOLS[type(node.op)], b))
            return _BINOPS[type(node.op)](a, b)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant):
            v = walk(node.operand)
            lines.append(f"-({v}) = {-v}")
            return -v
        return evaluate_expression(ast.unparse(node))

    walk(ast.parse(expr, mode="eval"))
    return "\n".join(lines) or f"{expr} = {evaluate_expression(expr)}"


def canonical_key(expr: str) -> str:
    """A key shared by expressions that are the same problem: redundant parentheses and operand order of
    ``+``/``*`` do not count; signs and operators do.

    >>> canonical_key("( 3 + -5 )") == canonical_key("-5 + 3"), canonical_key("3 + 5") == canonical_key("3 * 5")
    (True, False)
    """

    def walk(node: ast.AST) -> str:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.UnaryOp):
            return f"{type(node.op).__name__}({walk(node.operand)})"
        if isinstance(node, ast.BinOp):
            parts = [walk(node.left), walk(node.right)]
            if isinstance(node.op, ast.Add | ast.Mult):
                parts.sort()
            return f"{type(node.op).__name__}({','.join(parts)})"
        raise ValueError(f"unsupported syntax {ast.dump(node)} in {expr!r}")

    return walk(ast.parse(expr, mode="eval"))


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
