"""The bundled ``arithmetic`` dataset: sizes, golds checked by evaluating each expression, no train/test overlap."""

from __future__ import annotations

import ast
import operator
import re

import pytest

from openrft.data import leakage_report, load_bundled, load_samples
from openrft.tasks import task_for

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _value(node: ast.AST) -> int:
    """Integer value of an int/+/-/* expression tree (no ``eval``)."""
    if isinstance(node, ast.Expression):
        return _value(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_value(node.left), _value(node.right))
    raise AssertionError(f"unexpected syntax {ast.dump(node)}")


@pytest.fixture(scope="module")
def splits():
    return {s: load_bundled("arithmetic", s) for s in ("train", "test")}


def test_loads_with_expected_sizes_and_fields(splits) -> None:
    assert len(splits["train"]) == 100 and len(splits["test"]) == 300
    assert load_samples("arithmetic", split="train", limit=3) == splits["train"][:3]
    for split, data in splits.items():
        assert [s.id for s in data] == [f"arithmetic/{split}/{i}" for i in range(len(data))]
        for s in data:
            assert (s.task, s.answer_type, s.choices) == ("arithmetic", "numeric", None)
            cfg = s.meta["generator"]["config"]
            assert s.meta["generator"]["dataset"] == "basic_arithmetic"
            assert (cfg["min_terms"], cfg["max_terms"], cfg["min_digits"], cfg["max_digits"]) == (2, 2, 1, 2)
            assert cfg["operators"] == ["+", "-", "*"]


def test_every_gold_equals_the_evaluated_expression(splits) -> None:
    for s in splits["train"] + splits["test"]:
        expr = s.meta["expression"]
        assert s.question == f"Calculate {expr}."
        assert re.fullmatch(r"\d{1,3} [-+*] \d{1,3}", expr), expr
        assert int(s.answer) == _value(ast.parse(expr, mode="eval")), s.id
        assert task_for(s).grade(rf"so \boxed{{{s.answer}}}", s).correct


def test_no_duplicates_within_or_across_splits(splits) -> None:
    train, test = splits["train"], splits["test"]
    raw = leakage_report(train, test, normalize=False, threshold=None)
    assert raw.n_leaked == 0 and raw.within == {"train": [], "test": []}
    # The default normalization drops signs and operators; even so no test item shares its numbers with train.
    normalized = leakage_report(train, test)
    assert normalized.n_leaked == 0
    assert not [p for p in normalized.near if p.a[0] != p.b[0]]
