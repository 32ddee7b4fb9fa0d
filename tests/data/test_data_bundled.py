"""Bundled registry, package-data access and the seeded split helper."""

from __future__ import annotations

from importlib import resources

import pytest

from openrft.data import (
    SCIKNOWEVAL_TASKS,
    DataError,
    Sample,
    bundled_path,
    get_bundled,
    leakage_report,
    list_bundled,
    load_bundled,
    split_samples,
)
from openrft.data.bundled import bundled_root


def test_names() -> None:
    names = list_bundled()
    assert names == [f"sciknoweval/{t}" for t in SCIKNOWEVAL_TASKS] + [
        "sciknoweval/all", "gsm8k", "svamp", "reft/svamp", "reft/svamp-pcot", "reft/mathqa", "reft/mathqa-numeric",
        "arithmetic", "multistep"]
    assert len(SCIKNOWEVAL_TASKS) == 8


def test_importlib_resources_reaches_the_data() -> None:
    root = resources.files("openrft.data") / "bundled"
    assert (root / "svamp" / "SVAMP.json").is_file()
    assert (root / "README.md").read_text(encoding="utf-8").startswith("# Bundled datasets")
    assert sorted(p.name for p in (root / "sciknoweval_l3" / "test").iterdir()) == sorted(
        f"{t}.jsonl" for t in SCIKNOWEVAL_TASKS)
    assert bundled_root() == root
    assert bundled_path("gsm8k") == root / "gsm8k" / "test.jsonl"
    assert bundled_path("gsm8k", "train") == root / "gsm8k" / "train.jsonl"
    assert {p.name for p in (root / "reft").iterdir()} >= {"LICENSE", "NOTICE", "svamp_nl.json"}
    assert bundled_path("sciknoweval/all", "train") == root / "sciknoweval_l3" / "train"


@pytest.mark.parametrize(
    ("name", "split", "count"),
    [("gsm8k", "test", 1319), ("gsm8k", "train", 7473), ("svamp", "test", 1000),
     ("sciknoweval/diffusion_rate_analysis", "test", 49), ("sciknoweval/diffusion_rate_analysis", "train", 100),
     ("sciknoweval/all", "test", 749)],
)
def test_load_bundled_counts(name: str, split: str, count: int) -> None:
    assert len(load_bundled(name, split)) == count


def test_unknown_names_and_splits() -> None:
    with pytest.raises(DataError,
                       match=r"unknown bundled dataset 'svamps'; did you mean: svamp, reft/svamp, reft/svamp-pcot\? "):
        get_bundled("svamps")
    with pytest.raises(DataError, match=r"did you mean: sciknoweval/chemical_calculation"):
        load_bundled("chemical_calculation")
    with pytest.raises(DataError,
                       match=r"valid names: sciknoweval/GB1_ftness_prediction, .*, gsm8k, svamp, reft/svamp, .*, "
                             r"arithmetic, multistep$"):
        load_bundled("mmlu")
    with pytest.raises(DataError, match=r"'reft/mathqa' has no split 'train'; splits: test"):
        load_bundled("reft/mathqa", "train")


def test_split_samples_is_seeded_disjoint_and_ordered() -> None:
    sv = load_bundled("svamp")
    train, test = split_samples(sv, 0.2, seed=3)
    assert (len(train), len(test)) == (800, 200)
    assert split_samples(sv, 0.2, seed=3) == (train, test)
    assert split_samples(sv, 0.2, seed=4)[1] != test
    ids = [s.id for s in sv]
    assert sorted(ids.index(s.id) for s in test) == [ids.index(s.id) for s in test]  # input order kept
    assert {s.id for s in train}.isdisjoint(s.id for s in test) and len(train) + len(test) == 1000
    assert len(split_samples(sv, 50, seed=0)[1]) == 50
    with pytest.raises(ValueError, match="fraction must lie in"):
        split_samples(sv, 1.5)
    with pytest.raises(ValueError, match="needs 0 <= count <= 1000"):
        split_samples(sv, 2000)


def test_split_samples_keeps_duplicates_together() -> None:
    xs = [Sample(id=str(i), task="t", question=f"Question {i % 5}!", answer="1") for i in range(20)]
    for seed in range(5):
        train, test = split_samples(xs, 6, seed=seed)
        assert len(test) == 8  # groups of 4 copies: 6 rounds up to two whole groups
        assert leakage_report(train, test, threshold=None).n_leaked == 0
    _, test = split_samples(xs, 6, seed=0, group_duplicates=False)
    assert len(test) == 6
