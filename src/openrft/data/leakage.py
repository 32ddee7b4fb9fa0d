"""Duplicate questions within a split and leakage across train/test.

Exact duplicates compare a *key*: the question after :func:`normalize_text` (case,
whitespace, punctuation and symbols ignored), optionally followed by the sorted,
normalized option texts (so a shuffled copy of an MCQ still matches). Near duplicates
are pairs whose token sets have Jaccard similarity >= ``threshold``, found with prefix
filtering (an inverted index over each item's rarest tokens), so a few thousand items
take well under a second unless the data is highly templated.

>>> from openrft.data import Sample
>>> tr = [Sample(id="a", task="t", question="What is 2+2?", answer="4")]
>>> te = [Sample(id="b", task="t", question="what is 2 + 2", answer="4"),
...       Sample(id="c", task="t", question="What is 3+3?", answer="6")]
>>> r = leakage_report(tr, te)
>>> r.n_leaked, [s.id for s in r.leaked_test()], [s.id for s in r.clean_test()]
(1, ['b'], ['c'])
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from openrft.data.sample import Sample

SPLITS = ("train", "test")
_PUNCT = re.compile(r"[^\w\s]|_")


def normalize_text(text: str) -> str:
    """Casefold, NFKC, punctuation/symbols to spaces, whitespace collapsed.

    >>> normalize_text("  The speed is ( ) 4 m/s;\\n ")
    'the speed is 4 m s'
    """
    t = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PUNCT.sub(" ", t).split())


def sample_key(s: Sample, *, normalize: bool = True, include_choices: bool = False) -> str:
    """The string two samples must share to count as exact duplicates."""
    norm = normalize_text if normalize else (lambda x: x)
    key = norm(s.question)
    if include_choices and s.choices:
        key += "\x1e" + "\x1f".join(sorted(norm(c) for c in s.choices))
    return key


@dataclass(frozen=True)
class NearPair:
    """Two samples with similar (but not identical-key) text; ``a``/``b`` are (split, index)."""

    a: tuple[str, int]
    b: tuple[str, int]
    score: float

    @property
    def kind(self) -> str:
        return self.a[0] if self.a[0] == self.b[0] else "cross"


@dataclass
class LeakageReport:
    """What :func:`leakage_report` found; indices refer to the ``train``/``test`` lists."""

    train: Sequence[Sample] = field(repr=False)
    test: Sequence[Sample] = field(repr=False)
    within: dict[str, list[list[int]]]  # split -> groups (>= 2 indices) sharing one key
    cross: list[tuple[list[int], list[int]]]  # (train indices, test indices) per shared key
    near: list[NearPair]
    near_total: int
    options: dict[str, Any]

    def _split(self, name: str) -> Sequence[Sample]:
        return self.train if name == "train" else self.test

    def repeats(self, split: str) -> int:
        """Extra copies within ``split``: samples beyond the first of each group."""
        return sum(len(g) - 1 for g in self.within[split])

    @property
    def n_leaked(self) -> int:
        """Test samples whose key also occurs in train."""
        return sum(len(te) for _, te in self.cross)

    def leaked_test(self) -> list[Sample]:
        idx = sorted(i for _, te in self.cross for i in te)
        return [self.test[i] for i in idx]

    def clean_test(self) -> list[Sample]:
        """Test samples minus those leaked from train and minus repeats (first copy kept)."""
        drop = {i for _, te in self.cross for i in te} | {i for g in self.within["test"] for i in g[1:]}
        return [s for i, s in enumerate(self.test) if i not in drop]

    def near_counts(self) -> dict[str, int]:
        c = Counter(p.kind for p in self.near)
        return {k: c.get(k, 0) for k in ("train", "test", "cross")}

    def by_task(self) -> dict[str, dict[str, int]]:
        """Per task: repeats within train and test, leaked test samples, near pairs (by the second item)."""
        rows: dict[str, Counter[str]] = defaultdict(Counter)
        for split in SPLITS:
            data = self._split(split)
            for s in data:
                rows[s.task]["n_" + split] += 0
            for g in self.within[split]:
                for i in g[1:]:
                    rows[data[i].task][f"{split}_repeats"] += 1
        for _, te in self.cross:
            for i in te:
                rows[self.test[i].task]["leaked"] += 1
        for p in self.near:
            rows[self._split(p.b[0])[p.b[1]].task]["near"] += 1
        cols = ("train_repeats", "test_repeats", "leaked", "near")
        return {t: {c: rows[t].get(c, 0) for c in cols} for t in sorted(rows)}

    def _ids(self, split: str, idx: Sequence[int]) -> list[str]:
        data = self._split(split)
        return [data[i].id for i in idx]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: counts, options, groups by sample id, per-task table."""
        return {
            "options": dict(self.options),
            "counts": {"n_train": len(self.train), "n_test": len(self.test),
                       "train_repeats": self.repeats("train"), "test_repeats": self.repeats("test"),
                       "leaked_test": self.n_leaked, "leaked_keys": len(self.cross),
                       "near": self.near_counts(), "near_total": self.near_total},
            "within": {s: [self._ids(s, g) for g in self.within[s]] for s in SPLITS},
            "cross": [{"question": self.test[te[0]].question, "train": self._ids("train", tr),
                       "test": self._ids("test", te)} for tr, te in self.cross],
            "near": [{"a": self._split(p.a[0])[p.a[1]].id, "a_split": p.a[0], "b": self._split(p.b[0])[p.b[1]].id,
                      "b_split": p.b[0], "score": round(p.score, 4)} for p in self.near],
            "by_task": self.by_task(),
        }

    def summary(self) -> str:
        """A short human-readable report, one line per finding and a per-task table."""
        o = self.options
        key = ("normalized " if o["normalize"] else "raw ") + "question"
        key += " + choices" if o["include_choices"] else ""
        nc = self.near_counts()
        lines = [
            f"leakage report: {len(self.train)} train / {len(self.test)} test samples (key: {key})",
            f"  train: {self.repeats('train')} repeated samples in {len(self.within['train'])} groups",
            f"  test:  {self.repeats('test')} repeated samples in {len(self.within['test'])} groups",
            f"  cross: {self.n_leaked} test samples ({len(self.cross)} distinct keys) also in train",
        ]
        if o["threshold"] is not None:
            more = f" (first {len(self.near)} kept)" if self.near_total > len(self.near) else ""
            lines.append(f"  near duplicates (token Jaccard >= {o['threshold']:.2f}): {nc['train']} within train, "
                         f"{nc['test']} within test, {nc['cross']} across{more}")
        table = {t: r for t, r in self.by_task().items() if any(r.values())}
        if table:
            w = max(len(t) for t in table)
            lines.append(f"  {'task':<{w}}  train_rep test_rep leaked near")
            lines += [f"  {t:<{w}}  {r['train_repeats']:>9} {r['test_repeats']:>8} {r['leaked']:>6} {r['near']:>4}"
                      for t, r in table.items()]
        return "\n".join(lines)


def _groups(keys: Sequence[str]) -> dict[str, list[int]]:
    g: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        g.setdefault(k, []).append(i)
    return g


def near_pairs(token_sets: Sequence[frozenset[str]], threshold: float) -> list[tuple[int, int, float]]:
    """All pairs ``(i, j, jaccard)`` with ``i < j`` and Jaccard >= ``threshold`` (exact; prefix filtering).

    >>> near_pairs([frozenset("abcdefghij"), frozenset("abcdefghik"), frozenset("xyz")], 0.8)
    [(0, 1, 0.8181818181818182)]
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must lie in (0, 1]")
    freq = Counter(t for s in token_sets for t in s)
    eps = 1e-9
    index: dict[str, list[int]] = defaultdict(list)
    out: list[tuple[int, int, float]] = []
    for i in sorted(range(len(token_sets)), key=lambda k: len(token_sets[k])):
        toks = sorted(token_sets[i], key=lambda t: (freq[t], t))
        n = len(toks)
        if n == 0:
            continue
        prefix = n - math.ceil(threshold * n - eps) + 1
        cands: set[int] = set()
        for t in toks[:prefix]:
            cands.update(j for j in index[t] if len(token_sets[j]) >= threshold * n - eps)
            index[t].append(i)
        for j in cands:
            inter = len(token_sets[i] & token_sets[j])
            score = inter / (len(token_sets[i]) + len(token_sets[j]) - inter)
            if score >= threshold - eps:
                out.append((min(i, j), max(i, j), score))
    return sorted(out)


def leakage_report(train: Sequence[Sample], test: Sequence[Sample], *, normalize: bool = True,
                   include_choices: bool = False, threshold: float | None = 0.9,
                   max_near: int = 1000) -> LeakageReport:
    """Exact duplicates within each split and across splits, and near duplicates.

    ``normalize=False`` compares raw question strings; ``include_choices`` adds the
    sorted option texts to the key (and to the near-duplicate tokens);
    ``threshold=None`` skips near duplicates. At most ``max_near`` near pairs are kept
    (highest score first); ``near_total`` counts them all.
    """
    opts = {"normalize": normalize, "include_choices": include_choices, "threshold": threshold}
    keys = {name: [sample_key(s, normalize=normalize, include_choices=include_choices) for s in data]
            for name, data in zip(SPLITS, (train, test), strict=True)}
    groups = {name: _groups(k) for name, k in keys.items()}
    within = {name: [g for g in groups[name].values() if len(g) > 1] for name in SPLITS}
    cross = [(groups["train"][k], g) for k, g in groups["test"].items() if k in groups["train"]]
    near: list[NearPair] = []
    total = 0
    if threshold is not None:
        items = [(name, i) for name, data in zip(SPLITS, (train, test), strict=True) for i in range(len(data))]
        flat = [s for data in (train, test) for s in data]
        toks = [frozenset(sample_key(s, include_choices=include_choices).replace("\x1e", " ").replace("\x1f", " ")
                          .split()) for s in flat]
        flat_keys = keys["train"] + keys["test"]
        found = [(i, j, sc) for i, j, sc in near_pairs(toks, threshold) if flat_keys[i] != flat_keys[j]]
        total = len(found)
        found.sort(key=lambda p: (-p[2], p[0], p[1]))
        near = [NearPair(items[i], items[j], sc) for i, j, sc in found[:max_near]]
    return LeakageReport(train=train, test=test, within=within, cross=cross, near=near, near_total=total,
                         options=opts)
