"""``openrft prm train`` on the tiny random Llama: it learns a learnable step signal, resumes, and its CLI works.

The synthetic signal: each step states a sum ("5 plus 3 gives 8") and opens with "Yes," (label 1)
or "No," (label 0). Arithmetic correctness itself is beyond a 2-layer random model in seconds
(held-out accuracy stays at chance), but carrying a marker from a step's start to its step
token is learnable: the head reads the step-token position, so attention has to fetch it.
"""

from __future__ import annotations

import json
import random
import time

import pytest
import torch

from openrft.cli.main import main
from openrft.data.sample import Sample
from openrft.reward_models.labels import StepExample, read_step_examples, write_step_examples
from openrft.reward_models.prm_train import PRMTrainConfig, run_prm_train
from openrft.reward_models.value_head_train import Item, auc_score, binary_metrics, split_by_group
from openrft.rewards.prm.value_head import ValueHeadPRM, is_value_head_checkpoint

torch.set_num_threads(1)


def synthetic_examples(n: int, seed: int = 0) -> list[StepExample]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        steps, labels = [], []
        for _ in range(rng.randint(2, 4)):
            a, b, good = rng.randint(1, 9), rng.randint(1, 9), rng.random() < 0.5
            steps.append(f"{'Yes' if good else 'No'}, {a} plus {b} gives {a + b}")
            labels.append(int(good))
        out.append(StepExample(f"Question {i}: add the numbers.", steps, labels, source="synthetic"))
    return out


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory):
    return write_step_examples(tmp_path_factory.mktemp("labels") / "steps.jsonl", synthetic_examples(300))


def test_split_and_metrics_helpers():
    items = [Item([1], [0], [1.0], group=f"q{i % 10}") for i in range(40)]
    train, held = split_by_group(items, 0.2, seed=0)
    assert len(held) == 8 and not {i.group for i in train} & {i.group for i in held}
    assert split_by_group(items, 0.0, 0) == (items, [])
    assert auc_score([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert auc_score([0.5, 0.5], [0, 1]) == 0.5 and auc_score([1, 2], [1, 1]) is None
    m = binary_metrics([2.0, -1.0, 0.5, -3.0], [1, 0, 0, 0], majority_class=0)
    assert m["accuracy"] == 0.75 and m["majority_baseline"] == 0.75 and m["auc"] == 1.0


def test_config_validation():
    with pytest.raises(ValueError, match="no step labels"):
        PRMTrainConfig()
    with pytest.raises(ValueError, match="--auto-label needs --data"):
        PRMTrainConfig(auto_label=True)
    with pytest.raises(ValueError, match="label_mode 'fuzzy' is unknown"):
        PRMTrainConfig(labels=["x"], label_mode="fuzzy")
    with pytest.raises(ValueError, match="unknown step rule"):
        PRMTrainConfig(labels=["x"], step_rule="sentences")
    with pytest.raises(ValueError, match="unknown settings"):
        PRMTrainConfig.from_dict({"labels": ["x"], "lr": 1})


def test_prm_train_beats_majority_baseline_and_resumes(tiny_model_dir, labels_file, tmp_path):
    config = PRMTrainConfig(model=str(tiny_model_dir), labels=[str(labels_file)], epochs=2, learning_rate=1e-3,
                            batch_size=8, held_out=0.2, device="cpu")
    t0 = time.perf_counter()
    result = run_prm_train(config, tmp_path / "prm", show_progress=False)
    seconds = time.perf_counter() - t0
    held, before = result.metrics["held_out"], result.metrics["held_out_before_training"]
    print(f"held-out step accuracy {held['accuracy']:.3f} vs majority {held['majority_baseline']:.3f}, "
          f"AUC {held['auc']:.3f}, before training {before['accuracy']:.3f}; {seconds:.1f}s")
    assert not result.skipped
    assert held["count"] > 100
    assert held["accuracy"] >= held["majority_baseline"] + 0.2
    assert held["auc"] >= 0.9 and held["loss"] < before["loss"]
    assert result.metrics["last_loss"] < result.metrics["first_loss"]
    # outputs: metrics.jsonl per step, metrics.json, a loadable checkpoint that scores as trained
    lines = [json.loads(x) for x in (tmp_path / "prm" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == result.metrics["steps"] == 2 * 30  # 240 training solutions / batch 8, 2 epochs
    assert json.loads((tmp_path / "prm" / "metrics.json").read_text())["held_out"] == held
    assert is_value_head_checkpoint(tmp_path / "prm")
    prm = ValueHeadPRM.from_pretrained(tmp_path / "prm", device="cpu")
    yes, no = prm.score("Question 7: add the numbers.", ["Yes, 2 plus 2 gives 4", "No, 3 plus 1 gives 4"])
    assert yes > 0.5 > no
    # a rerun with the same settings and labels is skipped
    t1 = time.perf_counter()
    again = run_prm_train(config, tmp_path / "prm", show_progress=False)
    assert again.skipped and again.metrics == result.metrics and time.perf_counter() - t1 < seconds


def test_cli_prm_train_end_to_end(tiny_model_dir, tmp_path, capsys):
    labels = write_step_examples(tmp_path / "small.jsonl", synthetic_examples(80, seed=1))
    argv = ["prm", "train", "--labels", str(labels), "--model", str(tiny_model_dir), "--out", str(tmp_path / "run"),
            "--epochs", "1", "--lr", "1e-3", "--rank", "4", "--held-out", "0.25", "--device", "cpu",
            "--step-token", "\\n\\n", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "held-out steps:" in out and "checkpoint:" in out
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["config"]["lora_rank"] == 4
    marker = json.loads((tmp_path / "run" / "checkpoint" / "prm_format.json").read_text())
    assert marker["adapter"] is True and marker["step_token"] == "\n\n"
    # the LoRA checkpoint (no config.json of its own) loads by the stage directory or the checkpoint directory
    from openrft.rewards.prm.loader import load_scorer

    for where in (tmp_path / "run", tmp_path / "run" / "checkpoint"):
        scorer = load_scorer(str(where), device="cpu")
        assert type(scorer).__name__ == "ValueHeadPRM"
        (scores,) = scorer.score_batch(["Question 1: add."], [["2 plus 2 gives 4", "so 4"]])
        assert len(scores) == 2 and all(0.0 <= s <= 1.0 for s in scores)
    assert main(argv) == 0
    assert "already finished" in capsys.readouterr().out


def test_cli_prm_train_bad_labels(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "steps": ["a"], "labels": [1]}) + "\n"
                   + json.dumps({"question": "q", "steps": ["a"], "label": [1]}) + "\n")
    assert main(["prm", "train", "--labels", str(bad), "--model", str(tiny_model_dir), "--out",
                 str(tmp_path / "o")]) == 2
    assert f"{bad}:2: unknown field 'label'" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["prm", "train", "--labels", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no step examples (the file is empty)" in capsys.readouterr().err
    assert main(["prm", "train", "--out", str(tmp_path / "o")]) == 2
    assert "no step labels" in capsys.readouterr().err


def test_prm_train_auto_label(tiny_model_dir, tiny_generator, tmp_path):
    data = tmp_path / "samples.jsonl"
    data.write_text("".join(json.dumps(Sample(id=f"s{i}", task="add", question=f"What is {i} + 2?", answer=str(i + 2),
                                              answer_type="numeric").to_dict()) + "\n" for i in range(4)))
    config = PRMTrainConfig(model=str(tiny_model_dir), auto_label=True, data=[str(data)], split=None,
                            n_completions=2, n_rollouts=2, max_new_tokens=10, temperature=1.0, step_rule="re:\\s+",
                            epochs=1, held_out=0.25, device="cpu")
    result = run_prm_train(config, tmp_path / "auto", generator=tiny_generator, show_progress=False)
    labels = read_step_examples(tmp_path / "auto" / "labels" / "steps.jsonl")
    assert len(labels) >= 6 and all(e.source == "math_shepherd" for e in labels)
    assert all(0.0 <= x <= 1.0 for e in labels for x in e.labels)
    assert result.metrics["train"]["steps"] + result.metrics["held_out"]["count"] == sum(len(e.steps) for e in labels)
    # the labels are reused, not regenerated, when only training settings change
    mtime = (tmp_path / "auto" / "labels" / "steps.jsonl").stat().st_mtime_ns

    class NoGenerate:
        def generate(self, *a, **k):
            raise AssertionError("labels should have been reused")

    config.learning_rate = 2e-4
    again = run_prm_train(config, tmp_path / "auto", generator=NoGenerate(), show_progress=False)
    assert not again.skipped and (tmp_path / "auto" / "labels" / "steps.jsonl").stat().st_mtime_ns == mtime


def test_init_adapter_is_merged_and_travels_with_the_checkpoint(tiny_model_dir, tmp_path):
    """ReFT initialises its reward model from the SFT policy: that adapter is merged under the new LoRA and copied
    into the checkpoint, so the checkpoint loads (and scores the same) without the original adapter directory."""
    import shutil

    from openrft.models.loading import load_model
    from openrft.models.lora import LoraSettings, attach_lora
    from openrft.reward_models.value_head_train import ValueHeadTrainSettings, build_value_head_model

    base, _ = load_model(str(tiny_model_dir), device="cpu")
    sft = attach_lora(base, LoraSettings(rank=4, dropout=0.0))
    with torch.no_grad():
        for name, p in sft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    sft.save_pretrained(tmp_path / "sft" / "adapter")
    settings = ValueHeadTrainSettings(model=str(tiny_model_dir), init_adapter=str(tmp_path / "sft"), device="cpu")
    model, tok = build_value_head_model(settings)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    prm = ValueHeadPRM(model, tok)
    steps = ["Yes, 1 plus 1 gives 2", "No, 2 plus 2 gives 5"]
    scores = prm.score("Question: add.", steps)
    out = prm.save_pretrained(tmp_path / "ckpt")
    assert (out / "init_adapter" / "adapter_config.json").is_file()
    shutil.rmtree(tmp_path / "sft")
    loaded = ValueHeadPRM.from_pretrained(out, device="cpu", base_model="ignored", adapter=True)  # marker fields
    assert loaded.score("Question: add.", steps) == pytest.approx(scores, abs=1e-5)
    plain = build_value_head_model(ValueHeadTrainSettings(model=str(tiny_model_dir), device="cpu"))[0]
    plain.v_head.load_state_dict(model.v_head.state_dict())
    assert ValueHeadPRM(plain, tok).score("Question: add.", steps) != pytest.approx(scores, abs=1e-4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'candidates'"):
        ValueHeadPRM.from_pretrained(out, device="cpu", candidates=["+"])


def test_ranking_term_pairs_a_questions_solutions_and_orders_right_above_wrong(tiny_model_dir, tmp_path):
    """rank_weight: batches hold pairs of one question's solutions, the term is -log sigmoid(s_right - s_wrong)
    over a question's (right, wrong) pairs with s = the lowest step logit, its gradient lifts the right solution's
    weakest step and lowers the wrong one's; a solution's grade comes from the labelling's completion_correct
    (unknown when max_length cut its steps); off (0) keeps the training identity it had before the option."""
    from openrft.reward_models.prm_train import encode_step_examples
    from openrft.reward_models.value_head_train import paired_order, ranking_loss
    from openrft.models.loading import load_model
    from openrft.rewards.prm.value_head import DEFAULT_STEP_TOKEN

    items = [Item([1], [0], [0.0], f"q{i % 5}", outcome=(i % 3 == 0) if i < 20 else None) for i in range(23)]
    order = paired_order(items, random.Random(0))
    assert sorted(order) == list(range(23))
    pairs = [order[k:k + 2] for k in range(0, 22, 2)]
    assert all(items[a].group == items[b].group for a, b in pairs[:-1])  # pairs of one question's solutions
    for q in range(5):  # as many (right, wrong) pairs as a question allows
        right = sum(items[i].outcome is True for i in range(23) if i % 5 == q)
        wrong = sum(items[i].outcome is False for i in range(23) if i % 5 == q)
        mixed = sum({items[a].outcome, items[b].outcome} == {True, False} for a, b in pairs if a % 5 == q)
        assert mixed == min(right, wrong)
    assert len({items[a].group for a, _ in pairs[:4]}) >= 3  # a batch of 8 spans several questions

    batch = [Item([1, 2], [0, 1], [1.0, 1.0], "q", True), Item([1, 2], [0, 1], [1.0, 0.0], "q", False),
             Item([1], [0], [1.0], "p", True)]  # p has no wrong solution: no pair
    logits = torch.tensor([0.5, 3.0, 1.0, 2.0, -4.0], requires_grad=True)
    loss = ranking_loss(logits, batch)
    torch.testing.assert_close(loss, -torch.nn.functional.logsigmoid(torch.tensor(0.5 - 1.0)))
    loss.backward()
    assert logits.grad[0] < 0 and logits.grad[2] > 0  # right's lowest step up, wrong's lowest step down
    assert logits.grad[[1, 3, 4]].abs().sum() == 0
    assert ranking_loss(logits[4:], batch[2:]) is None

    _, tok = load_model(str(tiny_model_dir))
    examples = [StepExample(f"Question {i // 4}: add.", ["Yes, 1 plus 1 gives 2", "No, 2 plus 2 gives 5"],
                            [1.0, float(i % 2)], source="synthetic", meta={"completion_correct": bool(i % 2)})
                for i in range(24)]
    encoded, _ = encode_step_examples(examples, tok, DEFAULT_STEP_TOKEN, max_length=1024)
    assert [it.outcome for it in encoded] == [bool(i % 2) for i in range(24)]
    cut, _ = encode_step_examples(examples[:1], tok, DEFAULT_STEP_TOKEN, max_length=len(encoded[0].ids) - 2)
    assert len(cut[0].positions) == 1 and cut[0].outcome is None

    labels = write_step_examples(tmp_path / "steps.jsonl", examples)
    base = dict(model=str(tiny_model_dir), labels=[str(labels)], epochs=1, batch_size=8, held_out=0.0, device="cpu")
    ranked = run_prm_train(PRMTrainConfig(**base, rank_weight=1.0), tmp_path / "ranked", show_progress=False)
    lines = [json.loads(x) for x in (tmp_path / "ranked" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == ranked.metrics["steps"] == 3 and all(x["rank_loss"] > 0 for x in lines)
    plain = run_prm_train(PRMTrainConfig(**base), tmp_path / "plain", show_progress=False)
    assert not plain.skipped
    settings = [json.loads((tmp_path / d / "manifest.json").read_text())["config"] for d in ("ranked", "plain")]
    assert settings[0]["rank_weight"] == 1.0 and "rank_weight" not in settings[1]
    with pytest.raises(ValueError, match="rank_weight must be >= 0"):
        PRMTrainConfig(**base, rank_weight=-1.0)
