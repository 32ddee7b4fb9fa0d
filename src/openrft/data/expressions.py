"""Integer arithmetic expressions (ints, ``+ - *``, unary minus, parentheses): a safe evaluator, worked solutions
and a canonical key, shared by the generators of the bundled ``arithmetic`` and ``multistep`` datasets
(``scripts/make_arithmetic.py``, ``scripts/make_multistep.py``) and by the verified re-templating augmentation
(:mod:`openrft.augment.template`). Expressions are parsed with :mod:`ast`; nothing is ``eval``-ed.
"""

from __future__ import annotations

import ast
import operator

__all__ = ["canonical_key", "evaluate_expression", "worked_solution"]

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
