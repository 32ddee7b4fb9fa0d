"""Outcome reward model (ReFT's reranker) on the tiny random Llama: scoring, checkpoints, training, CLI."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from openrft.cli.main import main
from openrft.data.sample import DataError, Sample
from openrft.reward_models.orm_train import (
    ORMTrainConfig, OutcomeExample, read_outcome_examples, run_orm_train, sample_outcome_examples,
    write_outcome_examples,
)
from openrft.rewards.orm import OutcomeRewardModel
from openrft.rewards.prm.base import PRMFormatError
from openrft.rewards.prm.value_head import ValueHeadModel, ValueHeadPRM, is_value_head_checkpoint, read_format

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def orm(tiny_model_dir):
    from openrft.models.loading import load_model

    model, tok = load_model(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    return OutcomeRewardModel(ValueHeadModel(model, base_model=str(tiny_model_dir)), tok, batch_size=2)


def synthetic(n: int, seed: int = 0) -> list[OutcomeExample]:
    """Completions that end by saying whether they checked out: the label is learnable from the last words."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        for _ in range(2):
            good = rng.random() < 0.5
            completion = f"{a} + {b} = {a + b}. Verified: {'yes' if good else 'no'}"
            out.append(OutcomeExample(f"Problem {i}: what is {a} + {b}?", completion, int(good)))
    return out


def test_score_batching_and_round_trip(orm, tmp_path):
    questions = ["What is 2 + 2?", "What is 10 + 7?", "Q", "What is 2 + 2?"]
    completions = ["2 + 2 = 4. The answer is 4.", "17", "a much longer completion " * 5, "The answer is 5."]
    alone = [orm.score([q], [c])[0] for q, c in zip(questions, completions)]
    for bs in (1, 3, 8):
        orm.batch_size = bs
        assert orm.score(questions, completions) == pytest.approx(alone, abs=1e-5)
    orm.batch_size = 2
    assert all(0 < s < 1 for s in alone) and len(set(alone)) == 4
    ids = orm.encode("Q", "done")
    assert ids[0] == orm.tokenizer.bos_token_id and ids[-1] == orm.tokenizer.eos_token_id
    out = orm.save_pretrained(tmp_path / "orm")
    assert read_format(out)["format"] == "orm" and not is_value_head_checkpoint(out)
    loaded = OutcomeRewardModel.from_pretrained(out, device="cpu")
    assert loaded.score(questions, completions) == pytest.approx(alone, abs=1e-6)
    with pytest.raises(PRMFormatError, match="outcome reward model"):
        ValueHeadPRM.from_pretrained(out, device="cpu")
    with pytest.raises(ValueError, match="2 questions for 1"):
        orm.score(["a", "b"], ["c"])


def test_outcome_examples_files(tmp_path):
    path = write_outcome_examples(tmp_path / "o.jsonl", synthetic(3))
    assert read_outcome_examples(path) == synthetic(3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "completion": "c", "label": 1}) + "\n"
                   + json.dumps({"question": "q", "answer": "c", "label": 1}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: unknown field 'answer'"):
        read_outcome_examples(bad)
    bad.write_text(json.dumps({"question": "q", "completion": "c", "label": 2}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'label'"):
        read_outcome_examples(bad)
    bad.write_text("\n")
    with pytest.raises(DataError, match="the file is empty"):
        read_outcome_examples(bad)


def test_orm_train_learns_and_reranks(tiny_model_dir, tmp_path):
    labels = write_outcome_examples(tmp_path / "train.jsonl", synthetic(150))
    config = ORMTrainConfig(model=str(tiny_model_dir), labels=[str(labels)], epochs=2, learning_rate=1e-3,
                            held_out=0.2, device="cpu")
    result = run_orm_train(config, tmp_path / "orm", show_progress=False)
    held = result.metrics["held_out"]
    print(f"orm held-out accuracy {held['accuracy']:.3f} vs majority {held['majority_baseline']:.3f}, "
          f"AUC {held['auc']:.3f}; rerank {result.metrics['rerank']}")
    assert held["count"] == 60 and held["accuracy"] >= held["majority_baseline"] + 0.2 and held["auc"] >= 0.9
    rerank = result.metrics["rerank"]
    assert rerank["questions"] == 30 and rerank["rerank_accuracy"] >= rerank["mean_accuracy"]
    scorer = OutcomeRewardModel.from_pretrained(tmp_path / "orm", device="cpu")
    yes, no = scorer.score(["What is 3 + 4?"] * 2, ["3 + 4 = 7. Verified: yes", "3 + 4 = 7. Verified: no"])
    assert yes > 0.5 > no
    assert run_orm_train(config, tmp_path / "orm", show_progress=False).skipped
    # the ranking term reads an outcome model's label as the solution's grade (pairs of one question's solutions)
    ranked = dataclasses.replace(config, rank_weight=1.0, epochs=1)
    run_orm_train(ranked, tmp_path / "orm-ranked", show_progress=False)
    lines = [json.loads(x) for x in (tmp_path / "orm-ranked" / "metrics.jsonl").read_text().splitlines()]
    assert any("rank_loss" in x for x in lines)


def test_sample_outcome_examples_grades_with_the_task(tiny_generator):
    samples = [Sample(id=f"s{i}", task="add", question=f"What is {i} + 1?", answer=str(i + 1), answer_type="numeric")
               for i in range(3)]
    examples = sample_outcome_examples(tiny_generator, samples, n=2, max_new_tokens=6, temperature=1.0)
    assert len(examples) == 6 and [e.meta["sample_id"] for e in examples] == ["s0", "s0", "s1", "s1", "s2", "s2"]
    assert all(e.label in (0.0, 1.0) and e.question == f"What is {e.meta['sample_id'][1]} + 1?" for e in examples)


def test_cli_orm_train_from_sampled_data(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(Sample(id=f"s{i}", task="add", question=f"What is {i} + 2?", answer=str(i + 2),
                                              answer_type="numeric").to_dict()) + "\n" for i in range(4)))
    argv = ["orm", "train", "--data", str(data), "--model", str(tiny_model_dir), "-n", "2", "--max-new-tokens", "6",
            "--epochs", "1", "--held-out", "0.25", "--device", "cpu", "--out", str(tmp_path / "run"), "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out completions: 2" in out and "rerank on 1 held-out questions" in out
    sampled = read_outcome_examples(tmp_path / "run" / "samples" / "completions.jsonl")
    assert len(sampled) == 8 and all(e.label in (0.0, 1.0) for e in sampled)
    assert OutcomeRewardModel.from_pretrained(tmp_path / "run", device="cpu").score(["q"], ["c"])[0] > 0
    assert main(argv) == 0 and "already finished" in capsys.readouterr().out
    assert main(["orm", "train", "--out", str(tmp_path / "x")]) == 2
    assert "no training data" in capsys.readouterr().err
