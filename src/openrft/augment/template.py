"""Verified re-templating of arithmetic questions: the augmentation for numeric tasks a small rewriter cannot do.

The bundled 135M rewriter keeps no variant of a question (``bench/augment.py``: its paraphrases lose numbers or
stop being questions), so on CPU the ``+DA`` rows would add no sample at all. For samples that carry their
arithmetic in ``meta["expression"]`` (the bundled ``arithmetic`` and ``multistep`` tasks), ``backend:
template`` makes variants without a model, two kinds in turn:

* **renumber**: the same operators with the operands in another order (``9 + 6 * 3`` -> ``3 + 9 * 6``): a new
  problem of the same shape and the same numbers (so it stays on the training side of a split made by numbers),
  whose gold is computed again by the safe evaluator (:func:`openrft.data.expressions.evaluate_expression`) and
  whose worked solution is rewritten to match; negative results and repeats of a question already made are
  skipped;
* **reword**: the same expression asked another way ("What is 9 + 6 * 3?", "Evaluate 9 + 6 * 3."), gold
  unchanged: the meaning-preserving rewrite OpenRFT's DA asks an LLM for.

Renumbered variants are not paraphrases: they are extra problems made from the training data's own numbers.
They are verified (the gold is recomputed, never copied), documented as their own ``method`` in each sample's
``meta``, and counted separately in the augment stage's stats.

>>> from openrft.data.sample import Sample
>>> s = Sample(id="q", task="t", question="Calculate 9 + 6 * 3.", answer="27", answer_type="numeric",
...            meta={"expression": "9 + 6 * 3"})
>>> [(v.question, v.answer, v.meta["method"]) for v in template_variants(s, 3, seed=0)]
[('What does 3 + 6 * 9 equal?', '57', 'renumber'), ('What does 9 + 6 * 3 equal?', '27', 'reword'), ('Find the value of 6 + 3 * 9.', '33', 'renumber')]
"""

from __future__ import annotations

import ast
import itertools
import random

from openrft.data.expressions import canonical_key, evaluate_expression, worked_solution
from openrft.data.sample import Sample

__all__ = ["PHRASINGS", "TemplateError", "renumber", "template_variants"]

#: question templates (``{e}`` is the expression); the first is the bundled tasks' own wording
PHRASINGS = ("Calculate {e}.", "What is {e}?", "Evaluate {e}.", "Compute {e}.", "Find the value of {e}.",
             "Work out {e}.", "What does {e} equal?")


class TemplateError(ValueError):
    """A sample the template rewriter cannot vary (no arithmetic expression in its meta)."""


def _operands(expr: str) -> list[int]:
    return [n.value for n in ast.walk(ast.parse(expr, mode="eval"))
            if isinstance(n, ast.Constant) and type(n.value) is int]


def renumber(expr: str, order: tuple[int, ...]) -> str:
    """``expr`` with its integer operands (left to right) put in ``order``.

    >>> renumber("9 + 6 * 3", (2, 0, 1))
    '3 + 9 * 6'
    """
    tree = ast.parse(expr, mode="eval")
    constants = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is int]
    constants.sort(key=lambda n: (n.lineno, n.col_offset))
    values = [n.value for n in constants]
    if sorted(order) != list(range(len(values))):
        raise ValueError(f"order {order} is not a permutation of the {len(values)} operands of {expr!r}")
    out, last = [], 0
    for node, i in zip(constants, order):  # replace in the source text: keeps the original spacing and signs
        out.append(expr[last:node.col_offset] + str(values[i]))
        last = node.end_col_offset
    return "".join(out) + expr[last:]


def _phrase(template: str, expr: str) -> str:
    return template.format(e=expr)


def template_variants(sample: Sample, k: int, seed: int = 0) -> list[Sample]:
    """Up to ``k`` verified variants of ``sample`` (renumbered and reworded in turn; see the module docstring).

    Each variant's ``meta`` keeps the parent's and sets ``expression``, ``rationale`` (a worked solution of the
    variant's own expression) and ``method`` (``renumber`` or ``reword``); the caller sets ids and provenance.
    """
    expr = (sample.meta or {}).get("expression")
    if not isinstance(expr, str) or not expr.strip():
        raise TemplateError(f"sample {sample.id}: the template rewriter varies arithmetic questions and needs "
                            "meta['expression'] (the bundled arithmetic and multistep tasks carry it); use an LLM "
                            "rewriter (augment backend transformers or openai) for other data")
    gold = evaluate_expression(expr)
    if str(gold) != str(sample.answer).strip():
        raise TemplateError(f"sample {sample.id}: meta['expression'] {expr!r} evaluates to {gold}, not the gold "
                            f"answer {sample.answer!r}; the template rewriter only varies samples it can verify")
    rng = random.Random(f"{seed}:{sample.id}")
    n = len(_operands(expr))
    orders = [o for o in itertools.permutations(range(n)) if o != tuple(range(n))]
    rng.shuffle(orders)
    seen = {canonical_key(expr)}
    renumbered: list[str] = []
    for order in orders:
        new = renumber(expr, order)
        key = canonical_key(new)
        if key in seen or evaluate_expression(new) < 0 <= gold:
            continue
        seen.add(key)
        renumbered.append(new)
    phrasings = [p for p in PHRASINGS if _phrase(p, expr) != sample.question]
    rng.shuffle(phrasings)
    out: list[Sample] = []
    used_questions = {sample.question}
    r = w = 0
    while len(out) < k and (r < len(renumbered) or w < len(phrasings)):
        want_renumber = len(out) % 2 == 0
        if (want_renumber and r < len(renumbered)) or w >= len(phrasings):
            new_expr, template, method = renumbered[r], phrasings[(r + w) % len(phrasings)] if phrasings \
                else PHRASINGS[0], "renumber"
            r += 1
        else:
            new_expr, template, method = expr, phrasings[w], "reword"
            w += 1
        question = _phrase(template, new_expr)
        if question in used_questions:
            continue
        used_questions.add(question)
        value = evaluate_expression(new_expr)
        meta = {**(sample.meta or {}), "expression": new_expr, "rationale": worked_solution(new_expr),
                "method": method}
        out.append(sample.replace(question=question, answer=str(value), meta=meta))
    return out
