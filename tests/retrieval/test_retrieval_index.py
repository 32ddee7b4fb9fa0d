"""FewShotIndex on the real embedder: paraphrases, exclusions, per-task search, persistence, k, ties."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from openrft.augment import AugmentConfig
from openrft.augment.stage import expand
from openrft.data.loaders import load_bundled
from openrft.data.sample import Sample
from openrft.retrieval import FewShotIndex, IndexMismatchError, family_id, question_text
from openrft.retrieval.index import MANIFEST_FILE, SAMPLES_FILE

PHYS = "high_school_physics_calculation"
CHEM = "chemical_calculation"


@pytest.fixture(scope="module")
def physics():
    return load_bundled(f"sciknoweval/{PHYS}", "train")


@pytest.fixture(scope="module")
def chemistry():
    return load_bundled(f"sciknoweval/{CHEM}", "train")[:30]


@pytest.fixture(scope="module")
def index(embedder, physics, chemistry):
    return FewShotIndex.build(physics + chemistry, embedder)


# hand-written paraphrases of two training questions (new wording, options kept or reordered)
PARAPHRASES = [
    (f"{PHYS}/train/66",
     "Three geostationary satellites, placed well, let any two places on the equator talk by radio. Today such a "
     "satellite circles at 6.6 Earth radii. If the Earth spun faster and we still wanted to do this with just "
     "three synchronous satellites, roughly what is the shortest rotation period the Earth could have?",
     None),
    (f"{CHEM}/train/3",
     "At constant temperature a 4.0-litre sample of gas at 90.0 kPa is allowed to expand until its pressure falls "
     "to 20.0 kPa. Find the final volume of the gas.",
     (3, 2, 1, 0)),
]


@pytest.mark.parametrize("source_id, text, order", PARAPHRASES)
def test_a_paraphrase_retrieves_its_source_first(index, physics, chemistry, source_id, text, order):
    source = next(s for s in physics + chemistry if s.id == source_id)
    choices = source.choices if order is None else tuple(source.choices[i] for i in order)
    gold = "ABCD"[choices.index(source.choices[source.gold_index])]
    query = Sample(id="paraphrase/0", task=source.task, question=text, choices=choices, answer=gold,
                   answer_type="mcq")
    hits = index.search([query], k=3)[0]
    assert hits[0].sample.id == source_id
    assert hits[0].score > hits[1].score >= hits[2].score
    assert [s.id for s in index.query(query, 3)] == [h.sample.id for h in hits]


def test_results_stay_within_the_query_task(index, physics):
    phys_text = physics[66]
    as_chem = phys_text.replace(id="odd/0", task=CHEM)  # a physics question labelled chemistry
    shots = index.query(as_chem, k=5)
    assert len(shots) == 5 and all(s.task == CHEM for s in shots)
    assert all(s.task == PHYS for s in index.query(physics[3], k=10))


def test_query_many_matches_single_queries(index, physics, chemistry):
    queries = [physics[5], chemistry[2], physics[40]]
    assert index.query_many(queries, k=3) == [index.query(q, k=3) for q in queries]


def test_excludes_self_variants_parent_and_duplicate_questions(embedder, physics):
    parent = physics[66]
    family = expand(parent, [
        "Three geostationary satellites let any two points on the equator communicate by radio; their orbit is "
        "6.6 Earth radii. What is the least Earth rotation period that would still allow this?",
        "If Earth rotated faster, what minimum rotation period still lets three synchronous satellites link every "
        "pair of equatorial points (orbit radius now 6.6 Earth radii)?"], AugmentConfig(k=2, expansion=3))
    assert [family_id(s) for s in family] == [parent.id] * 3  # the augment stage's parent key
    others = physics[:12]
    train = others + family
    idx = FewShotIndex.build(train, embedder)
    # each member of the family, queried, sees none of its family
    for member in family:
        shots = idx.query(member, k=len(others))
        assert {s.id for s in shots} == {s.id for s in others}
        with pytest.raises(ValueError, match=f"k={len(others) + 1}.*{PHYS}.*only {len(others)} usable"):
            idx.query(member, k=len(others) + 1)
    # an unseen paraphrase does retrieve the family, but only its best member (one shot per problem)
    outsider = family[1].replace(id="test/66", meta={}, question=family[1].question + " Explain.")
    shots = idx.query(outsider, k=4)
    assert sum(family_id(s) == parent.id for s in shots) == 1 and shots[0].id.startswith(parent.id)
    # a test item whose question and options duplicate a training item (options shuffled) is not answered by it
    dup = others[4].replace(id="test/dup", choices=others[4].choices[::-1], answer="ABCD"[3 - others[4].gold_index])
    assert others[4].id not in {s.id for s in idx.query(dup, k=len(others) - 1)}


def test_duplicate_training_questions_give_one_shot(embedder, physics):
    # train/31 and train/50 are the same question (same options) in the bundled data
    a, b = physics[31], physics[50]
    assert (a.question, a.choices) == (b.question, b.choices)
    idx = FewShotIndex.build([a, b, *physics[:6]], embedder)
    query = a.replace(id="test/x", question=a.question + " Choose one.")
    shots = idx.query(query, k=8, allow_fewer=True)
    assert len(shots) == 7 and shots[0].id == a.id and b.id not in {s.id for s in shots}


def test_k_too_large_names_k_task_and_count(embedder, chemistry, physics):
    idx = FewShotIndex.build(chemistry[:5], embedder)
    with pytest.raises(ValueError, match=rf"k=6 .*5 training sample\(s\) of task '{CHEM}'"):
        idx.query(chemistry[10], k=6)
    with pytest.raises(ValueError, match=f"no training samples of task '{PHYS}'"):
        idx.query(physics[0], k=1)
    assert len(idx.query(chemistry[10], k=6, allow_fewer=True)) == 5
    assert len(idx.query(chemistry[0], k=5, allow_fewer=True)) == 4  # itself excluded
    assert idx.query(physics[0], k=3, allow_fewer=True) == []
    assert idx.query(chemistry[10], k=0) == []


def test_ties_break_by_id_whatever_the_input_order(embedder, chemistry):
    base = chemistry[3]
    # the uncased MiniLM tokenizer strips accents: these five texts embed identically, yet are distinct questions
    words = {"d": "résumé", "b": "resume", "e": "résume", "a": "resumé", "c": "rèsumé"}
    clones = [base.replace(id=f"{CHEM}/clone/{c}", question=f"{base.question} ({w})") for c, w in words.items()]
    # and three exact copies of one question: one shot only, the lowest id
    copies = [chemistry[9].replace(id=f"{CHEM}/copy/{c}") for c in "zxy"]
    train = clones + copies + chemistry[5:9]
    want = [f"{CHEM}/clone/{c}" for c in "abcde"]
    for seed in range(3):
        random.Random(seed).shuffle(train)
        idx = FewShotIndex.build(train, embedder)
        hits = idx.search([base.replace(id="q/0")], k=5)[0]
        assert [h.sample.id for h in hits] == want
        assert len({round(h.score, 6) for h in hits}) == 1
        shots = idx.query(chemistry[9].replace(id="q/1", question=chemistry[9].question + "?"), k=3)
        assert shots[0].id == f"{CHEM}/copy/x" and sum("/copy/" in s.id for s in shots) == 1


def test_save_load_round_trip_and_refusals(embedder, chemistry, tmp_path):
    train = chemistry[:12]
    idx = FewShotIndex.build(train, embedder)
    idx.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / MANIFEST_FILE).read_text())
    assert manifest["embedder"] == "sentence-transformers/all-MiniLM-L6-v2" and manifest["format_version"] == 1
    assert manifest["tasks"] == {CHEM: 12}
    again = FewShotIndex.load(tmp_path / "ix", embedder, samples=list(reversed(train)))  # order does not matter
    queries = chemistry[20:24]
    assert again.query_many(queries, 3) == idx.query_many(queries, 3)
    assert np.allclose(again.vectors, idx.vectors)
    assert [s.meta for s in again.samples] == [s.meta for s in idx.samples]

    with pytest.raises(IndexMismatchError, match="embedder 'sentence-transformers/all-MiniLM-L6-v2', not 'other/model'"):
        FewShotIndex.load(tmp_path / "ix", "other/model")
    with pytest.raises(IndexMismatchError, match="other training samples"):
        FewShotIndex.load(tmp_path / "ix", embedder, samples=chemistry[:11])
    edited = [train[0].replace(answer="A" if train[0].answer != "A" else "B"), *train[1:]]
    with pytest.raises(IndexMismatchError, match="other training samples"):
        FewShotIndex.load(tmp_path / "ix", embedder, samples=edited)
    lines = (tmp_path / "ix" / SAMPLES_FILE).read_text().splitlines()
    (tmp_path / "ix" / SAMPLES_FILE).write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(IndexMismatchError, match="do not match"):
        FewShotIndex.load(tmp_path / "ix", embedder)
    with pytest.raises(FileNotFoundError, match="no saved few-shot index"):
        FewShotIndex.load(tmp_path / "nothing", embedder)


def test_build_rejects_duplicate_ids_and_empty_input(embedder, chemistry):
    with pytest.raises(ValueError, match="duplicate training sample id"):
        FewShotIndex.build([chemistry[0], chemistry[0]], embedder)
    with pytest.raises(ValueError, match="no training samples"):
        FewShotIndex.build([], embedder)


def test_search_widens_past_excluded_hits_and_matches_brute_force(embedder, physics):
    parent = physics[0]
    family = [parent] + [parent.replace(id=f"{parent.id}#aug{i}", question=f"{parent.question} (variant {i})",
                                        meta={"parent_id": parent.id}) for i in range(1, 25)]
    others = physics[1:15]
    idx = FewShotIndex.build(family + others, embedder)  # 24 variants outrank every other: the first 19 hits are family
    got = idx.search([parent], k=3)[0]
    q = embedder.encode([question_text(parent)])[0]
    brute = sorted(((-round(float(idx.vectors[i] @ q), 6), s.id) for i, s in enumerate(idx.samples)
                    if family_id(s) != parent.id))
    assert [h.sample.id for h in got] == [sid for _, sid in brute[:3]]
