"""Option shuffling as a property over every bundled SciKnowEval train record and many seeds."""

from __future__ import annotations

from collections import Counter

import pytest

from openrft.augment.shuffle import (
    apply_permutation,
    check_remap,
    option_permutation,
    pinned_positions,
    rng_for,
    shuffle_options,
    shuffle_skip_reason,
)
from openrft.augment.stage import AugmentConfig, expand
from openrft.data.loaders import load_bundled
from openrft.data.sample import Sample

SEEDS = range(10)


@pytest.fixture(scope="module")
def records():
    samples = load_bundled("sciknoweval/all", split="train")
    assert len(samples) == 800 and all(s.answer_type == "mcq" for s in samples)
    return samples


def test_gold_text_kept_options_permuted_and_deterministic_for_every_record_and_seed(records):
    moved = 0
    for seed in SEEDS:
        for s in records:
            t = shuffle_options(s, seed)
            order = t.meta["option_order"]
            assert sorted(order) == list(range(len(s.choices)))
            assert t.choices == tuple(s.choices[i] for i in order)
            assert t.choices[t.gold_index] == s.choices[s.gold_index], (s.id, seed)
            assert order[t.gold_index] == s.gold_index
            assert check_remap(s, t) == []
            assert (t.id, t.question, t.task, t.answer_type) == (s.id, s.question, s.task, s.answer_type)
            assert shuffle_options(s, seed) == t and shuffle_options(s, seed).meta == t.meta  # same seed, same result
            moved += t.choices != s.choices
    assert moved > 0.9 * len(records) * len(SEEDS)  # 23 of 24 permutations move something


def test_seeds_and_keys_give_different_orders_and_no_global_state(records):
    import random

    s = records[0]
    orders = {tuple(shuffle_options(s, seed).meta["option_order"]) for seed in range(200)}
    assert len(orders) == 24  # every permutation of 4 options shows up
    random.seed(1)
    a = shuffle_options(s, 7)
    random.seed(2)
    random.random()
    assert shuffle_options(s, 7) == a  # the global RNG plays no part
    assert shuffle_options(s, 7, key="other").meta["option_order"] != a.meta["option_order"] or \
        shuffle_options(s, 7, key="other2").meta["option_order"] != a.meta["option_order"]


def test_gold_letters_are_uniform_after_shuffling(records):
    counts = Counter(shuffle_options(s, seed).answer for seed in SEEDS for s in records)
    n = len(records) * len(SEEDS)
    assert set(counts) == set("ABCD")
    for letter in "ABCD":
        assert abs(counts[letter] / n - 0.25) < 0.02, counts
    before = Counter(s.answer for s in records)
    assert before["A"] / len(records) < 0.21  # the source is skewed (A: 164/800); shuffling evens it out


def test_variants_of_one_question_are_shuffled_independently(records):
    config = AugmentConfig(k=5, expansion=6)
    same_order = same_gold = pairs = 0
    for seed in range(2):
        config.seed = seed
        for s in records:
            outs = expand(s, [f"variant {i} of {s.id}" for i in range(1, 6)], config, "g")
            assert [o.id for o in outs] == [s.id] + [f"{s.id}#aug{i}" for i in range(1, 6)]
            for o in outs:
                assert check_remap(s.replace(question=o.question), o.replace(meta=o.meta)) == []
                assert o.meta["parent_id"] == s.id
            for a, b in zip(outs, outs[1:]):
                pairs += 1
                same_order += a.meta["option_order"] == b.meta["option_order"]
                same_gold += a.answer == b.answer
    assert abs(same_order / pairs - 1 / 24) < 0.01  # as for two independent uniform permutations
    assert abs(same_gold / pairs - 1 / 4) < 0.02


def test_balanced_gold_letters(records):
    config = AugmentConfig(k=3, expansion=4, balance_gold=True)
    outs = [o for s in records for o in expand(s, ["v1", "v2", "v3"], config)]
    assert Counter(o.answer for o in outs) == {letter: len(records) for letter in "ABCD"}
    for s in records[:50]:  # each question's 4 copies take 4 different letters
        assert sorted(o.answer for o in expand(s, ["v1", "v2", "v3"], config)) == list("ABCD")
        assert all(check_remap(s.replace(question=o.question), o) == [] for o in expand(s, ["v1", "v2", "v3"], config))


def test_fill_with_shuffles_gives_distinct_orders(records):
    config = AugmentConfig(k=0, expansion=6, fill_with_shuffles=True)
    for s in records[:100]:
        outs = expand(s, [], config)
        assert [o.meta["method"] for o in outs] == ["shuffle"] * 6
        orders = [tuple(o.meta["option_order"]) for o in outs]
        assert len(set(orders[1:])) == 5 and tuple(range(4)) not in orders[1:]
        assert all(check_remap(s, o) == [] for o in outs)


def test_shuffle_switches():
    s = Sample(id="q", task="t", question="2+2?", choices=("3", "4", "5"), answer="B", answer_type="mcq")
    outs = expand(s, ["Compute 2+2."], AugmentConfig(k=1, expansion=2, shuffle_original=False))
    assert outs[0] == s and outs[0].meta["method"] == "original" and outs[1].meta["method"] == "rewrite+shuffle"
    outs = expand(s, ["Compute 2+2."], AugmentConfig(k=1, expansion=2, shuffle=False))
    assert [o.meta["method"] for o in outs] == ["original", "rewrite"] and outs[1].choices == s.choices
    outs = expand(s, ["Compute 2+2."], AugmentConfig(k=1, expansion=2, keep_original=False))
    assert [(o.id, o.meta["method"]) for o in outs] == [("q#aug1", "rewrite+shuffle")]
    assert expand(s, [], AugmentConfig(k=1, keep_original=False))[0].meta["method"] == "shuffle"  # never lost


def test_non_mcq_letter_references_and_pinned_options():
    num = Sample(id="n", task="gsm8k", question="2+2?", answer="4", answer_type="numeric")
    assert shuffle_skip_reason(num) == "not_mcq" and shuffle_options(num, 0) is num
    outs = expand(num, ["Compute 2+2."], AugmentConfig(k=1))
    assert [o.meta["method"] for o in outs] == ["original", "rewrite"] and outs[1].choices is None
    ref = Sample(id="r", task="t", question="?", choices=("x", "y", "Both A and B"), answer="C", answer_type="mcq")
    assert shuffle_skip_reason(ref) == "letter_reference" and shuffle_options(ref, 0) is ref
    for opt in ("A and B", "Only B", "options A and C", "A, B and C"):
        if opt == "Only B":
            continue  # one letter alone is not a reference to other options
        s = Sample(id="r", task="t", question="?", choices=("x", "y", "z", opt), answer="A", answer_type="mcq")
        assert shuffle_skip_reason(s) == "letter_reference", opt
    pin = Sample(id="p", task="t", question="?", choices=("1", "2", "3", "None of the above"), answer="D",
                 answer_type="mcq")
    assert pinned_positions(pin.choices) == [3]
    for seed in range(30):
        t = shuffle_options(pin, seed)
        assert t.choices[3] == "None of the above" and t.answer == "D" and check_remap(pin, t) == []
    real = Sample(id="h", task="t", question="?", choices=("all of the existing aluminum-26 will decay", "b", "c"),
                  answer="A", answer_type="mcq")
    assert pinned_positions(real.choices) == []  # "all of the existing ..." does not point at other options


def test_permutation_primitives():
    for seed in range(50):
        perm = option_permutation(5, rng_for(seed, "x"), pinned=[4], gold=1, target=2)
        assert sorted(perm) == list(range(5)) and perm[4] == 4 and perm[2] == 1
    s = Sample(id="q", task="t", question="?", choices=("a", "b", "c"), answer="C", answer_type="mcq")
    t = apply_permutation(s, [2, 1, 0])
    assert t.choices == ("c", "b", "a") and t.answer == "A"
    assert check_remap(s, t.replace(answer="B")) == ["gold text changed: 'c' -> 'b'"]
    assert check_remap(s, t.replace(choices=("c", "b", "x"))) != []
