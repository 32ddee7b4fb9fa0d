"""Datasets shipped inside the package, by name, and a seeded train/test split helper.

Names: ``sciknoweval/<task>`` for the eight SciKnowEval L3 tasks of the OpenRFT paper
(splits ``train`` and ``test``), ``sciknoweval/all`` (the eight, in the paper's T1..T8
order), ``gsm8k`` (``test``) and ``svamp`` (one 1,000-problem evaluation set, served
as ``test``; make a train split with :func:`split_samples`). Provenance and licences:
``bundled/README.md``.

>>> "sciknoweval/retrosynthesis" in list_bundled()
True
>>> len(load_bundled("sciknoweval/diffusion_rate_analysis"))
49
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from openrft.data.sample import DataError, Sample

# Paper order T1..T8 (OpenRFT Table 1). "ftness" is the source's spelling.
SCIKNOWEVAL_TASKS: tuple[str, ...] = (
    "GB1_ftness_prediction",
    "retrosynthesis",
    "chemical_calculation",
    "molecule_structure_prediction",
    "high_school_physics_calculation",
    "material_calculation",
    "diffusion_rate_analysis",
    "perovskite_stability_prediction",
)


@dataclass(frozen=True)
class BundledDataset:
    """One bundled name: its layout and, per split, a file (or folder) under ``bundled/``."""

    name: str
    layout: str
    splits: dict[str, str]
    description: str


def _registry() -> dict[str, BundledDataset]:
    reg: dict[str, BundledDataset] = {}
    for t in SCIKNOWEVAL_TASKS:
        reg[f"sciknoweval/{t}"] = BundledDataset(
            f"sciknoweval/{t}", "sciknoweval",
            {s: f"sciknoweval_l3/{s}/{t}.jsonl" for s in ("train", "test")},
            f"SciKnowEval L3 {t} (4-option MCQ), OpenRFT split")
    reg["sciknoweval/all"] = BundledDataset(
        "sciknoweval/all", "sciknoweval", {s: f"sciknoweval_l3/{s}" for s in ("train", "test")},
        "the eight SciKnowEval L3 tasks, T1..T8 order")
    reg["gsm8k"] = BundledDataset("gsm8k", "gsm8k", {"test": "gsm8k/test.jsonl"},
                                  "GSM8K test set, 1,319 grade-school maths problems (numeric)")
    reg["svamp"] = BundledDataset("svamp", "svamp", {"test": "svamp/SVAMP.json"},
                                  "SVAMP, 1,000 arithmetic word problems (numeric); one file, served as 'test'")
    return reg


REGISTRY: dict[str, BundledDataset] = _registry()


def list_bundled() -> list[str]:
    """All bundled dataset names."""
    return list(REGISTRY)


def is_bundled(name: str) -> bool:
    return name in REGISTRY


def bundled_root() -> Path:
    """The ``bundled/`` data folder inside the installed package."""
    root = resources.files("openrft.data") / "bundled"
    if not isinstance(root, Path):  # pragma: no cover - zipped installs are not supported
        raise DataError(f"bundled data is not on the file system ({root}); install openrft unzipped")
    return root


def get_bundled(name: str) -> BundledDataset:
    """The registry entry for ``name``; an unknown name raises listing close matches and all names.

    >>> get_bundled("gsm8")
    Traceback (most recent call last):
    ...
    openrft.data.sample.DataError: unknown bundled dataset 'gsm8'; did you mean: gsm8k? valid names: ...
    """
    if name in REGISTRY:
        return REGISTRY[name]
    names = list(REGISTRY)
    short = {n.split("/", 1)[-1].lower(): n for n in names}
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    close += [short[m] for m in difflib.get_close_matches(name.lower(), list(short), n=3, cutoff=0.6)]
    close = list(dict.fromkeys(close))[:3]
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    raise DataError(f"unknown bundled dataset {name!r}; {hint}valid names: {', '.join(names)}")


def bundled_path(name: str, split: str = "test") -> Path:
    """Path of the file (``sciknoweval/all``: the split folder) holding ``split`` of ``name``."""
    ds = get_bundled(name)
    if split not in ds.splits:
        raise DataError(f"bundled dataset {name!r} has no split {split!r}; splits: {', '.join(ds.splits)}")
    path = bundled_root() / ds.splits[split]
    if not path.exists():
        raise DataError(f"bundled file {path} is missing; reinstall openrft (package data not installed?)")
    return path


def load_bundled(name: str, split: str = "test", *, limit: int | None = None, **kw: Any) -> list[Sample]:
    """Load a bundled dataset as samples; ``kw`` goes to the loader (``task``, ``answer_type``, ``field_map``)."""
    from openrft.data.loaders import load_samples

    ds = get_bundled(name)
    if name == "sciknoweval/all":
        out: list[Sample] = []
        for t in SCIKNOWEVAL_TASKS:
            out += load_samples(bundled_path(f"sciknoweval/{t}", split), format=ds.layout, split=split, **kw)
        return out[:limit] if limit is not None else out
    return load_samples(bundled_path(name, split), format=ds.layout, split=split, limit=limit, **kw)


def split_samples(samples: Sequence[Sample], test_size: int | float, seed: int = 0, *,
                  group_duplicates: bool = True) -> tuple[list[Sample], list[Sample]]:
    """Seeded train/test split; both parts keep the input order.

    ``test_size`` is a count or a fraction in (0, 1). With ``group_duplicates`` samples
    whose normalized question is the same (:func:`openrft.data.leakage.normalize_text`)
    go to the same side, so the split cannot leak a question; the test part then holds
    ``test_size`` samples, or a few more when a group straddles the boundary.

    >>> from openrft.data import Sample
    >>> xs = [Sample(id=str(i), task="t", question=f"q{i}", answer="1") for i in range(10)]
    >>> train, test = split_samples(xs, 0.3, seed=1)
    >>> len(train), len(test), split_samples(xs, 0.3, seed=1)[1] == test
    (7, 3, True)
    """
    from openrft.data.leakage import normalize_text

    n = len(samples)
    if isinstance(test_size, float) and not isinstance(test_size, bool):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size={test_size}: a fraction must lie in (0, 1)")
        k = round(test_size * n)
    else:
        k = int(test_size)
    if not 0 <= k <= n:
        raise ValueError(f"test_size={test_size}: needs 0 <= count <= {n}")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        key = normalize_text(s.question) if group_duplicates else str(i)
        groups.setdefault(f"{s.task}\x1f{key}", []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    test_idx: set[int] = set()
    for g in order:
        if len(test_idx) >= k:
            break
        test_idx.update(g)
    train = [s for i, s in enumerate(samples) if i not in test_idx]
    test = [s for i, s in enumerate(samples) if i in test_idx]
    return train, test
