"""The model-free 'template' augmentation of arithmetic questions: verified golds and worked solutions, the two
kinds of variant, bad input, the stage's outputs, and no variant that asks a held-out question."""

from __future__ import annotations

import pytest

from openrft.augment.stage import AUGMENTED, AugmentConfig, drop_test_questions, run_augment
from openrft.augment.template import TemplateError, renumber, template_variants
from openrft.data.loaders import load_bundled
from openrft.data.expressions import canonical_key, evaluate_expression, worked_solution
from openrft.data.sample import Sample
from openrft.tasks import task_for


def _sample(expr: str, answer: str | None = None, sid: str = "q") -> Sample:
    return Sample(id=sid, task="t", question=f"Calculate {expr}.", answer=answer or str(evaluate_expression(expr)),
                  answer_type="numeric", meta={"expression": expr})


@pytest.mark.parametrize("task", ["arithmetic", "multistep"])
def test_every_variant_of_the_bundled_train_set_is_verified(task):
    samples = load_bundled(task, "train")
    counts = []
    for s in samples:
        variants = template_variants(s, 5, seed=0)
        counts.append(len(variants))
        questions = [v.question for v in variants]
        assert len(set(questions)) == len(questions) and s.question not in questions
        for v in variants:
            expr = v.meta["expression"]
            assert v.answer == str(evaluate_expression(expr)) and v.meta["rationale"] == worked_solution(expr)
            assert v.meta["method"] in ("renumber", "reword") and expr in v.question
            # the task grades the variant's own worked solution + answer as correct
            reply = f"{v.meta['rationale']}\nThe answer is {v.answer}."
            assert task_for(v).grade(reply, v).correct
            if v.meta["method"] == "reword":
                assert v.answer == s.answer and canonical_key(expr) == canonical_key(s.meta["expression"])
            else:
                assert sorted(map(int, expr.replace("-", " ").replace("+", " ").replace("*", " ").split())) == \
                    sorted(map(int, s.meta["expression"].replace("-", " ").replace("+", " ").replace("*", " ").split()))
    assert sum(counts) / len(counts) >= 2.0  # at least two verified variants per question on average


def test_renumber_permutes_operands_in_place():
    assert renumber("12 - 3 * 4", (2, 1, 0)) == "4 - 3 * 12"
    with pytest.raises(ValueError, match="not a permutation"):
        renumber("1 + 2", (0, 0))


def test_kinds_alternate_and_k_caps_the_count():
    variants = template_variants(_sample("9 + 6 * 3"), 4, seed=1)
    assert len(variants) == 4 and [v.meta["method"] for v in variants[:2]] == ["renumber", "reword"]
    assert template_variants(_sample("9 + 6 * 3"), 4, seed=1) == variants  # seeded
    assert template_variants(_sample("9 + 6 * 3"), 0) == []


def test_samples_it_cannot_verify_are_refused():
    with pytest.raises(TemplateError, match=r"meta\['expression'\]"):
        template_variants(Sample(id="x", task="t", question="Why?", answer="1", answer_type="numeric"), 2)
    with pytest.raises(TemplateError, match="evaluates to 7, not the gold answer '8'"):
        template_variants(_sample("3 + 4", answer="8"), 2)
    with pytest.raises(ValueError, match="teacher_check does not apply"):
        AugmentConfig(backend="template", k=2, teacher_check=True)


def test_stage_writes_originals_and_variants_with_provenance(tmp_path):
    samples = [_sample("9 + 6 * 3", sid="a"), _sample("2 * 5 - 1", sid="b")]
    config = AugmentConfig(backend="template", k=3, expansion=4)
    result = run_augment(samples, None, config, tmp_path)
    ids = [s.id for s in result.samples]
    assert ids[:1] == ["a"] and "a#aug1" in ids and all(s.meta["parent_id"] in ("a", "b") for s in result.samples)
    assert result.stats["variants_kept"] == len(result.samples) - 2 and result.stats["samples_in"] == 2
    assert (tmp_path / AUGMENTED).is_file()
    again = run_augment(samples, None, config, tmp_path)  # finished: read back, not made again
    assert [s.to_dict() for s in again.samples] == [s.to_dict() for s in result.samples]


def test_variants_asking_a_held_out_question_are_dropped():
    train = run_augment([_sample("9 + 6 * 3", sid="a")], None, AugmentConfig(backend="template", k=5, expansion=6),
                        None).samples
    renumbered = next(s for s in train if s.meta["method"] == "renumber")
    test = [_sample(renumbered.meta["expression"], sid="t0")]
    kept, dropped = drop_test_questions(train, test)
    assert dropped >= 1 and renumbered.id not in {s.id for s in kept}
    assert kept[0].id == "a"  # an original always stays
    # the same expression with its operands swapped around + is the same question
    swapped = _sample("6 * 3 + 9", sid="t1")
    assert canonical_key(swapped.meta["expression"]) == canonical_key("9 + 6 * 3")
    kept, _ = drop_test_questions(train, [swapped])
    assert all(s.meta["method"] != "reword" for s in kept if s.meta.get("variant"))
