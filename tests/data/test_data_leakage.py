"""Leakage report: synthetic cases, near-pair search against brute force, and the SciKnowEval figures.

The shipped SciKnowEval split (data README) "has 3 high_school_physics_calculation
questions in both train and test" and "test files repeat questions (perovskite 5,
physics 2, diffusion 1)". Measured on the files:

* the repeat figures are raw question strings (``normalize=False``);
* the "3 in both" figure needs identical options too (``normalize=False,
  include_choices=True``); by raw question alone 4 physics test questions are in train
  (the 4th, "The river is 420 m wide...", has a corrupted option list in train, same gold
  text "105 s"), and the templated diffusion/perovskite stems also cross (2 + 4 records);
* after normalization (case, whitespace, punctuation: the default) more real copies
  appear, e.g. physics questions differing only by "( )" or quote marks, and one
  perovskite question present 4x in test (options shuffled) and once in train.
"""

from __future__ import annotations

import json
import random
import time

import pytest

from openrft.data import Sample, leakage_report, load_bundled, normalize_text
from openrft.data.leakage import near_pairs, sample_key

PHYS, PERO, DIFF = "high_school_physics_calculation", "perovskite_stability_prediction", "diffusion_rate_analysis"


@pytest.fixture(scope="module")
def ske() -> tuple[list[Sample], list[Sample]]:
    return load_bundled("sciknoweval/all", "train"), load_bundled("sciknoweval/all", "test")


def _nonzero(report) -> dict[str, tuple[int, int, int]]:
    return {t: (r["train_repeats"], r["test_repeats"], r["leaked"]) for t, r in report.by_task().items()
            if r["train_repeats"] or r["test_repeats"] or r["leaked"]}


# (normalize, include_choices) -> task: (train repeats, test repeats, leaked test samples)
FIGURES = {
    (False, False): {DIFF: (4, 1, 2), PHYS: (4, 2, 4), PERO: (0, 5, 4)},
    (False, True): {PHYS: (3, 2, 3)},
    (True, False): {DIFF: (4, 1, 2), PHYS: (5, 4, 7), PERO: (3, 9, 10)},
    (True, True): {PHYS: (3, 3, 6), PERO: (0, 3, 4)},
}


@pytest.mark.parametrize(("normalize", "include_choices"), list(FIGURES))
def test_sciknoweval_figures(ske, normalize: bool, include_choices: bool) -> None:
    report = leakage_report(*ske, normalize=normalize, include_choices=include_choices, threshold=None)
    assert _nonzero(report) == FIGURES[normalize, include_choices]


def test_readme_figures_per_task() -> None:
    for task, (test_repeats, leaked_raw, leaked_same_options) in {
            PERO: (5, 4, 0), PHYS: (2, 4, 3), DIFF: (1, 2, 0)}.items():
        train, test = load_bundled(f"sciknoweval/{task}", "train"), load_bundled(f"sciknoweval/{task}", "test")
        raw = leakage_report(train, test, normalize=False, threshold=None)
        assert raw.repeats("test") == test_repeats
        assert raw.n_leaked == leaked_raw
        assert leakage_report(train, test, normalize=False, include_choices=True, threshold=None).n_leaked \
            == leaked_same_options
    phys = leakage_report(load_bundled(f"sciknoweval/{PHYS}", "train"), load_bundled(f"sciknoweval/{PHYS}", "test"),
                          normalize=False, include_choices=True, threshold=None)
    assert [s.id for s in phys.leaked_test()] == [f"{PHYS}/test/{i}" for i in (45, 57, 87)]
    assert len(phys.clean_test()) == 100 - 3 - 2


def test_normalization_finds_punctuation_variants_as_near_pairs(ske) -> None:
    """Raw mode: every cross pair that only normalization joins shows up as a near pair of score 1."""
    raw = leakage_report(*ske, normalize=False, max_near=10_000)
    norm = leakage_report(*ske, threshold=None)
    train, test = ske

    def pairs(r) -> set[tuple[str, str]]:
        return {(train[i].id, test[j].id) for tr, te in r.cross for i in tr for j in te}

    extra = pairs(norm) - pairs(raw)
    assert len(extra) >= 3
    near = {(p["a"], p["b"]) for p in raw.to_dict()["near"] if p["score"] == 1.0 and p["b_split"] == "test"}
    assert extra <= near
    assert (f"{PHYS}/train/22", f"{PHYS}/test/22") in extra  # "are ()" vs "are ( )"


def test_summary_and_to_dict(ske) -> None:
    report = leakage_report(*ske)
    text = report.summary()
    assert "800 train / 749 test samples (key: normalized question)" in text
    assert "cross: 19 test samples (9 distinct keys) also in train" in text
    assert PHYS in text and "chemical_calculation" not in text
    d = json.loads(json.dumps(report.to_dict()))
    assert d["counts"]["leaked_test"] == 19 and d["counts"]["test_repeats"] == 14
    assert d["options"] == {"normalize": True, "include_choices": False, "threshold": 0.9}
    assert len(d["near"]) == min(report.near_total, 1000)
    assert all(set(c) == {"question", "train", "test"} for c in d["cross"])


def test_synthetic_exact_and_choice_keys() -> None:
    def s(i: str, q: str, ch: tuple[str, ...] | None = None, split_task: str = "t") -> Sample:
        return Sample(id=i, task=split_task, question=q, answer="A" if ch else "x",
                      answer_type="mcq" if ch else "text", choices=ch)

    train = [s("a", "Which is a noble gas?", ("He", "H", "O")), s("b", "Same?"), s("c", "same ?")]
    test = [s("d", "which is a NOBLE gas", ("O", "He", "H")), s("e", "Which is a noble gas?", ("N", "C", "H")),
            s("f", "Other")]
    r = leakage_report(train, test, threshold=None)
    assert r.within["train"] == [[1, 2]] and r.repeats("train") == 1 and r.repeats("test") == 1
    assert r.n_leaked == 2 and [x.id for x in r.clean_test()] == ["f"]
    rc = leakage_report(train, test, include_choices=True, threshold=None)
    assert [x.id for x in rc.leaked_test()] == ["d"]  # shuffled options still match; other options do not
    assert sample_key(test[0], include_choices=True) == sample_key(train[0], include_choices=True)
    assert leakage_report(train, test, normalize=False, threshold=None).n_leaked == 1
    assert normalize_text("Ｆｕｌｌ-width\u00a0TEXT!") == "full width text"


def test_near_pairs_matches_brute_force() -> None:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30)]
    sets = [frozenset(rng.sample(vocab, rng.randint(1, 12))) for _ in range(300)]
    sets += [frozenset(sorted(s)[:-1]) for s in sets[:40]]  # guaranteed similar pairs
    for threshold in (0.5, 0.8, 0.9, 1.0):
        brute = sorted((i, j, len(a & b) / len(a | b)) for i, a in enumerate(sets) for j, b in enumerate(sets)
                       if i < j and a and b and len(a & b) / len(a | b) >= threshold)
        assert near_pairs(sets, threshold) == brute
    with pytest.raises(ValueError):
        near_pairs(sets, 0.0)


def test_near_duplicates_and_cost() -> None:
    gsm, svamp = load_bundled("gsm8k"), load_bundled("svamp")
    start = time.perf_counter()
    report = leakage_report(svamp, gsm)
    assert time.perf_counter() - start < 30  # ~0.5 s here; bounded for a few thousand items
    assert report.n_leaked == 0
    q = "A train travels 60 km in 1 hour. How far does it go in 3 hours at that speed?"
    a = Sample(id="a", task="t", question=q, answer="180")
    b = a.replace(id="b", question=a.question.replace("at that speed", "at the same speed"))
    r = leakage_report([a], [b], threshold=0.8)
    assert r.n_leaked == 0 and r.near_counts() == {"train": 0, "test": 0, "cross": 1}
    assert r.near[0].a == ("train", 0) and r.near[0].b == ("test", 0) and 0.8 <= r.near[0].score < 1
    assert leakage_report([a], [b], threshold=0.95).near == []
    capped = leakage_report([a, a.replace(id="c")], [b], threshold=0.8, max_near=1)
    assert len(capped.near) == 1 and capped.near_total == 2
