"""The bundled ``multistep`` dataset: three-operand arithmetic whose golds, worked solutions and split hold."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from openrft.data import leakage_report, load_bundled
from openrft.tasks import task_for

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _value(node: ast.AST) -> int:
    """Integer value of an int/+/-/* expression tree, written independently of openrft.data.expressions."""
    if isinstance(node, ast.Expression):
        return _value(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    raise AssertionError(f"unexpected syntax {ast.dump(node)}")


@pytest.fixture(scope="module")
def splits():
    return {s: load_bundled("multistep", s) for s in ("train", "test")}


def test_sizes_fields_and_golds(splits) -> None:
    assert len(splits["train"]) == 100 and len(splits["test"]) == 300
    for split, data in splits.items():
        assert [s.id for s in data] == [f"multistep/{split}/{i}" for i in range(len(data))]
        for s in data:
            expr = s.meta["expression"]
            assert (s.task, s.answer_type, s.question) == ("multistep", "numeric", f"Calculate {expr}.")
            assert re.fullmatch(r"[1-6] [-+*] [1-6] [-+*] [1-6]", expr), expr
            gold = _value(ast.parse(expr, mode="eval"))
            assert int(s.answer) == gold >= 0, s.id
            assert task_for(s).grade(rf"so \boxed{{{s.answer}}}", s).correct


def test_worked_solutions_take_two_dependent_steps_in_precedence_order(splits) -> None:
    for s in splits["train"] + splits["test"]:
        first, second = s.meta["rationale"].split("\n")
        lhs1, res1 = first.split(" = ")[0], first.split(" = ")[-1]
        assert _value(ast.parse(lhs1, mode="eval")) == int(res1)
        assert res1 in second.split(" = ")[0]  # the second step uses the first step's result
        assert second.endswith(f"= {s.answer}")
        expr = s.meta["expression"]
        if re.fullmatch(r"\d [-+] \d \* \d", expr):  # precedence: the product comes first
            assert first.startswith(expr[4:])


def test_no_question_crosses_the_split(splits) -> None:
    raw = leakage_report(splits["train"], splits["test"], normalize=False, threshold=None)
    assert raw.n_leaked == 0 and raw.within == {"train": [], "test": []}
    normalized = leakage_report(splits["train"], splits["test"])
    assert normalized.n_leaked == 0 and not [p for p in normalized.near if p.a[0] != p.b[0]]
