"""Generate the bundled ``multistep`` dataset: three-operand integer arithmetic with operator precedence.

Each question is ``Calculate a op b op c.`` with single-digit operands (1..6) and two operators
from ``+ - *``, so a solution takes two dependent operations, and the second uses the result of
the first: a wrong intermediate step gives a wrong answer unless two errors cancel. Where a
``*`` follows a ``+``/``-`` (``7 + 3 * 4``) the multiplication comes first (precedence); the
bundled SmolLM2-135M-Instruct often gets that wrong, which is what process supervision should
catch. Results are kept non-negative.

No third-party generator: items come from ``random.Random(seed)`` in index order, so the files
are fixed by the seed. As for ``arithmetic`` (``scripts/make_arithmetic.py``, whose helpers this
script reuses): an expression drawn before is skipped (up to the operand order of ``+``/``*``),
each item goes to the split of its *numbers* (the first time those numbers occur), so openrft's
leakage check, which drops signs and operators, finds nothing across the split; every gold is
checked against an independent AST evaluation, and ``meta["rationale"]`` holds a worked solution
(one line per operation, in evaluation order) checked to end at the gold.

    .venv/bin/python scripts/make_multistep.py         # writes src/openrft/data/bundled/multistep/
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_arithmetic import numbers_key  # noqa: E402

from openrft.data.expressions import canonical_key, evaluate_expression, worked_solution  # noqa: E402
from openrft.data.leakage import leakage_report  # noqa: E402
from openrft.data.loaders import save_samples  # noqa: E402
from openrft.data.sample import Sample  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "openrft" / "data" / "bundled" / "multistep"
OPERATORS = "+-*"


def draw_expression(rng: random.Random, lo: int, hi: int) -> str:
    """``a op b op c`` with operands in ``[lo, hi]`` and operators from ``+ - *``.

    >>> draw_expression(random.Random(0), 1, 9)
    '7 - 7 * 1'
    """
    a, b, c = (rng.randint(lo, hi) for _ in range(3))
    op1, op2 = rng.choice(OPERATORS), rng.choice(OPERATORS)
    return f"{a} {op1} {b} {op2} {c}"


def generate(args: argparse.Namespace) -> tuple[list[Sample], list[Sample], dict]:
    config = {"operands": [args.min_operand, args.max_operand], "operators": list(OPERATORS), "terms": 3,
              "non_negative": True, "seed": args.seed}
    generator = {"script": "scripts/make_multistep.py", "config": config}
    want = {"train": args.train, "test": args.test}
    rng = random.Random(args.seed)
    seen: set[str] = set()
    side: dict[str, str] = {}
    picked: dict[str, list[Sample]] = {"train": [], "test": []}
    for idx in range(200_000):
        expr = draw_expression(rng, args.min_operand, args.max_operand)
        split_draw = rng.random()  # drawn for every item, so the stream does not depend on what was kept
        gold = evaluate_expression(expr)
        key = canonical_key(expr)
        if gold < 0 or key in seen:
            continue
        seen.add(key)
        question = f"Calculate {expr}."
        split = side.setdefault(numbers_key(question), "train" if split_draw < args.train / (args.train + args.test)
                                else "test")
        if len(picked[split]) == want[split]:
            continue
        rationale = worked_solution(expr)
        if not rationale.endswith(f"= {gold}") or rationale.count("\n") != 1:
            raise SystemExit(f"item {idx}: the worked solution of {expr!r} is {rationale!r}; expected two lines "
                             f"ending at {gold}")
        meta = {"expression": expr, "rationale": rationale, "source_index": idx, "generator": generator}
        picked[split].append(Sample(id=f"multistep/{split}/{len(picked[split])}", task="multistep",
                                    question=question, answer=str(gold), answer_type="numeric", meta=meta))
        if all(len(picked[s]) == want[s] for s in want):
            break
    else:
        raise SystemExit(f"only {len(picked['train'])}/{len(picked['test'])} train/test questions; widen the operands")
    return picked["train"], picked["test"], generator


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (train.jsonl, test.jsonl)")
    ap.add_argument("--train", type=int, default=100, help="train items")
    ap.add_argument("--test", type=int, default=300, help="test items")
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--min-operand", type=int, default=1)
    ap.add_argument("--max-operand", type=int, default=6)
    args = ap.parse_args(argv)
    train, test, generator = generate(args)
    rep = leakage_report(train, test, normalize=False, threshold=None)
    if rep.n_leaked or any(rep.within.values()):
        raise SystemExit(f"duplicate questions: within {rep.within}, across {rep.cross}")
    norm = leakage_report(train, test)
    if norm.n_leaked or any(p.a[0] != p.b[0] for p in norm.near):
        raise SystemExit(f"train/test share normalized questions: {norm.cross}")
    for name, data in (("train", train), ("test", test)):
        path = save_samples(data, args.out / f"{name}.jsonl")
        path.chmod(0o644)
        print(f"{path}: {len(data)} items", file=sys.stderr)
    print(f"config: {generator}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
