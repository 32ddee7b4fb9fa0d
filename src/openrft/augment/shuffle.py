"""Option shuffling with the gold letter remapped, deterministic per sample.

Every permutation comes from its own RNG seeded by ``(seed, key)`` (the key is the output
sample's id), never from global random state: the same seed gives the same options for a
sample whatever else runs, and two variants of one question are shuffled independently.

A permutation ``perm`` reads: new option ``i`` is old option ``perm[i]``; the new gold
letter is the position of the old gold index in ``perm``. Options that point at their
neighbours ("None of the above") stay where they are; a question whose options name other
options by letter ("Both A and B") is not shuffled at all.

>>> from openrft.data.sample import Sample
>>> s = Sample(id="q", task="t", question="2+2?", choices=("3", "4", "5", "6"), answer="B", answer_type="mcq")
>>> t = shuffle_options(s, seed=0)
>>> t.choices[t.gold_index] == "4", sorted(t.choices) == sorted(s.choices), check_remap(s, t)
(True, True, [])
>>> shuffle_options(s, seed=0) == t  # deterministic
True
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from openrft.data.sample import LETTERS, Sample

_PINNED_RE = re.compile(
    r"\b(?:all|none|both|neither)\s+of\s+(?:the\s+)?"
    r"(?:above|these|them|those|the\s+(?:above|options|choices|answers))\b"
    r"|\b(?:all|none)\s+(?:are|is)\s+(?:correct|true|right)\b"
    r"|^\s*(?:none|all)\s*\.?\s*$"
    r"|\bnone of the above\b|\ball of the above\b",
    re.IGNORECASE,
)
_LETTER_REF_RE = re.compile(
    r"\b(?:both|either|neither|only|options?|choices?|answers?)\s+"
    r"\(?[A-Z]\)?\s*(?:,|and|or|&|nor)\s*\(?[A-Z]\)?(?![\w])"                    # "Both A and B", "options A or C"
    r"|^\s*\(?[A-H]\)?\s*(?:,|and|&|or)\s*\(?[A-H]\)?"                          # an option that is "A and B",
    r"(?:\s*(?:,|and|&|or)\s*\(?[A-H]\)?)*\s*(?:only|are correct)?\s*\.?$",        # "A, B and C", "A and C only"
    re.IGNORECASE,
)


def rng_for(seed: int, key: str) -> random.Random:
    """A private RNG for ``key`` under ``seed`` (string seeding is stable across processes).

    >>> rng_for(1, "a").random() == rng_for(1, "a").random() != rng_for(1, "b").random()
    True
    """
    return random.Random(f"openrft-augment:{seed}:{key}")


def shuffle_skip_reason(sample: Sample) -> str | None:
    """Why ``sample``'s options must not be shuffled (``not_mcq``, ``single_option``, ``letter_reference``), else None.

    >>> s = Sample(id="q", task="t", question="?", choices=("x", "y", "Both A and B"), answer="C", answer_type="mcq")
    >>> shuffle_skip_reason(s)
    'letter_reference'
    """
    if sample.answer_type != "mcq" or not sample.choices:
        return "not_mcq"
    if len(sample.choices) < 2:
        return "single_option"
    if any(_LETTER_REF_RE.search(c) for c in sample.choices):
        return "letter_reference"
    return None


def pinned_positions(choices: Sequence[str]) -> list[int]:
    """Options that must keep their position ("None of the above", "All of these").

    >>> pinned_positions(["1", "2", "None of the above"])
    [2]
    """
    return [i for i, c in enumerate(choices) if _PINNED_RE.search(c)]


def option_permutation(n: int, rng: random.Random, *, pinned: Sequence[int] = (), gold: int | None = None,
                       target: int | None = None, avoid: Sequence[Sequence[int]] = ()) -> list[int]:
    """A permutation of ``range(n)`` keeping ``pinned`` positions fixed.

    With ``target`` (and ``gold``), the gold option is moved to position ``target`` when both
    are free to move; the other options are shuffled uniformly. ``avoid`` lists permutations
    to steer away from (redrawn up to 16 times), e.g. the identity for an extra shuffled copy.

    >>> option_permutation(4, rng_for(0, "q"), gold=1, target=3)[3]
    1
    """
    pinned_set = set(pinned)
    free = [i for i in range(n) if i not in pinned_set]
    avoid_set = {tuple(a) for a in avoid}
    perm: list[int] = list(range(n))
    for _ in range(17):
        order = free[:]
        rng.shuffle(order)
        if target is not None and gold is not None and gold in pinned_set:
            pass
        elif target is not None and gold is not None and target in free:
            order.remove(gold)
            order.insert(free.index(target), gold)
        perm = list(range(n))
        for pos, src in zip(free, order):
            perm[pos] = src
        if tuple(perm) not in avoid_set or len(free) < 2:
            break
    return perm


def apply_permutation(sample: Sample, perm: Sequence[int]) -> Sample:
    """``sample`` with options reordered by ``perm`` and the gold letter remapped.

    >>> s = Sample(id="q", task="t", question="?", choices=("x", "y", "z"), answer="A", answer_type="mcq")
    >>> t = apply_permutation(s, [2, 0, 1])
    >>> t.choices, t.answer
    (('z', 'x', 'y'), 'B')
    """
    assert sample.choices is not None and sorted(perm) == list(range(len(sample.choices))), "not a permutation"
    choices = tuple(sample.choices[i] for i in perm)
    answer = LETTERS[list(perm).index(sample.gold_index)]
    return sample.replace(choices=choices, answer=answer)


def shuffle_options(sample: Sample, seed: int, *, key: str | None = None, target: int | None = None,
                    avoid: Sequence[Sequence[int]] = ()) -> Sample:
    """``sample`` with shuffled options (RNG from ``seed`` and ``key``, default the sample id).

    The permutation is recorded in ``meta["option_order"]`` (new position -> old index). A
    sample that must not be shuffled (see :func:`shuffle_skip_reason`) comes back unchanged.
    """
    if shuffle_skip_reason(sample) is not None:
        return sample
    assert sample.choices is not None
    perm = option_permutation(len(sample.choices), rng_for(seed, key or sample.id),
                              pinned=pinned_positions(sample.choices), gold=sample.gold_index, target=target,
                              avoid=avoid)
    return sample.replace(choices=tuple(sample.choices[i] for i in perm), answer=LETTERS[perm.index(sample.gold_index)],
                          meta={**sample.meta, "option_order": perm})


def balanced_targets(count: int, n_options: int, rng: random.Random) -> list[int]:
    """Gold positions for ``count`` shuffled copies of one question: a round robin from a random start.

    Over many questions every letter is then equally likely, and within one question the
    gold letters of its copies differ as much as they can.

    >>> sorted(balanced_targets(4, 4, rng_for(0, "q")))
    [0, 1, 2, 3]
    """
    start = rng.randrange(n_options)
    return [(start + j) % n_options for j in range(count)]


def check_remap(original: Sample, shuffled: Sample) -> list[str]:
    """Problems with ``shuffled`` as a reshuffle of ``original`` (``[]`` when it is a correct one).

    Checks: same options as a multiset, gold option text unchanged, ``meta["option_order"]``
    (when present) maps every option back to the original.

    >>> s = Sample(id="q", task="t", question="?", choices=("x", "y"), answer="A", answer_type="mcq")
    >>> check_remap(s, s.replace(choices=("y", "x")))
    ["gold text changed: 'x' -> 'y'"]
    """
    problems = []
    if original.choices is None or shuffled.choices is None:
        return [] if original.choices == shuffled.choices else ["options added or removed"]
    if sorted(original.choices) != sorted(shuffled.choices):
        problems.append("options are not a permutation of the original's")
    if original.answer_type == "mcq":
        before, after = original.choices[original.gold_index], shuffled.choices[shuffled.gold_index]
        if before != after:
            problems.append(f"gold text changed: {before!r} -> {after!r}")
    order = shuffled.meta.get("option_order")
    if order is not None:
        if sorted(order) != list(range(len(original.choices))):
            problems.append(f"option_order {order} is not a permutation")
        elif any(shuffled.choices[i] != original.choices[j] for i, j in enumerate(order)):
            problems.append("option_order does not map the options back to the original")
        elif original.answer_type == "mcq" and order[shuffled.gold_index] != original.gold_index:
            problems.append("gold letter not remapped through option_order")
    return problems
