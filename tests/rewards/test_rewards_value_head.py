"""Value-head PRM (Skywork-o1-Open-PRM format) on the tiny random Llama: layout, causality, batching, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from openrft.rewards.prm.base import PRMFormatError
from openrft.rewards.prm.value_head import (
    FORMAT_FILE, VALUE_HEAD_FILE, ValueHeadModel, ValueHeadPRM, encode_steps, is_value_head_checkpoint, read_format,
)

torch.set_num_threads(1)

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
STEPS = ["Tom starts with 3 apples.", "He buys 4 more, so 3 + 4 = 7.", "The answer is 7."]


@pytest.fixture(scope="module")
def backbone_and_tok(tiny_model_dir):
    from openrft.models.loading import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def prm(backbone_and_tok, tiny_model_dir):
    model, tok = backbone_and_tok
    torch.manual_seed(0)
    return ValueHeadPRM(ValueHeadModel(model, base_model=str(tiny_model_dir)), tok, batch_size=2)


def test_encode_steps_layout(bundled_tokenizer):
    tok = bundled_tokenizer
    ids, flags = encode_steps(tok, "Q?", ["a = 1", "b = 2"], "\n")
    newline = tok.encode("\n", add_special_tokens=False)[-1]
    assert ids[0] == tok.bos_token_id  # SmolLM2's tokenizer has a BOS (<|im_start|>): it leads
    assert len(flags) == 2 and flags[-1] == len(ids) - 1
    assert all(ids[f] == newline for f in flags)
    assert tok.decode(ids[1:]) == "Q?\na = 1\nb = 2\n"
    # a custom step token: its last token is the flag
    ids2, flags2 = encode_steps(tok, "Q?", ["a", "b"], " ки")
    assert [ids2[f] for f in flags2] == [tok.encode(" ки", add_special_tokens=False)[-1]] * 2


def test_scores_are_probabilities_one_per_step(prm):
    scores = prm.score(QUESTION, STEPS)
    assert len(scores) == 3 and all(0.0 < s < 1.0 for s in scores)
    assert len(set(scores)) == 3  # a random head still tells the steps apart
    assert prm.score(QUESTION, []) == []


def test_one_forward_equals_per_prefix_scores_causal(prm):
    full = prm.score(QUESTION, STEPS)
    prefixes = [prm.score(QUESTION, STEPS[:k + 1])[-1] for k in range(len(STEPS))]
    assert full == pytest.approx(prefixes, abs=1e-5)
    # the score of step k does not depend on later steps
    changed = prm.score(QUESTION, STEPS[:2] + ["The answer is 12, obviously wrong."])
    assert changed[:2] == pytest.approx(full[:2], abs=1e-5)
    assert changed[2] != pytest.approx(full[2], abs=1e-4)
    # but it does depend on the question and on earlier steps
    assert prm.score("Another question entirely?", STEPS)[0] != pytest.approx(full[0], abs=1e-4)


def test_batching_and_padding_invariance(prm):
    questions = [QUESTION, "Short?", QUESTION, "What is 2 + 2?", "Empty one"]
    steps = [STEPS, ["x"], STEPS[:1], ["2 + 2 = 4", "so 4", "done", "really done", "yes"], []]
    alone = [prm.score(q, s) for q, s in zip(questions, steps)]
    for bs in (1, 2, 3, 8):
        prm.batch_size = bs
        got = prm.score_batch(questions, steps)
        assert [len(g) for g in got] == [len(s) for s in steps]
        for a, g in zip(alone, got):
            assert g == pytest.approx(a, abs=1e-5)
    prm.batch_size = 2


def test_no_steps_means_no_forward(prm, monkeypatch):
    calls = []
    original = prm.model.forward
    monkeypatch.setattr(prm.model, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert prm.score_batch(["q1", "q2"], [[], []]) == [[], []]
    assert calls == []
    prm.score_batch(["q1", "q2", "q3"], [["a"], [], ["b"]])
    assert len(calls) == 1  # batch_size 2: both solutions in one forward


def test_bad_calls(prm):
    with pytest.raises(ValueError, match="2 questions for 1"):
        prm.score_batch(["a", "b"], [["x"]])
    with pytest.raises(TypeError, match="list of step lists"):
        prm.score_batch(["a"], ["just a string"])


def test_save_load_round_trip_full(prm, tmp_path):
    out = prm.save_pretrained(tmp_path / "prm")
    meta = json.loads((out / FORMAT_FILE).read_text())
    assert meta["format"] == "value_head" and meta["step_token"] == "\n" and meta["adapter"] is False
    from safetensors import safe_open

    with safe_open(str(out / VALUE_HEAD_FILE), framework="pt") as f:
        assert sorted(f.keys()) == ["v_head.summary.bias", "v_head.summary.weight"]
    assert is_value_head_checkpoint(out)
    loaded = ValueHeadPRM.from_pretrained(out, device="cpu", batch_size=4)
    assert loaded.step_token == "\n" and loaded.batch_size == 4
    questions, steps = [QUESTION, "Short?"], [STEPS, ["x", "y"]]
    assert loaded.score_batch(questions, steps) == [pytest.approx(s, abs=1e-6) for s in prm.score_batch(questions,
                                                                                                        steps)]


def test_save_load_round_trip_lora(backbone_and_tok, tiny_model_dir, tmp_path):
    from openrft.models.loading import load_model
    from openrft.models.lora import LoraSettings, attach_lora

    base, tok = load_model(str(tiny_model_dir), device="cpu")
    torch.manual_seed(1)
    lora = attach_lora(base, LoraSettings(rank=4, dropout=0.0))
    with torch.no_grad():  # a trained-looking adapter: lora_B is zero at init
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    prm = ValueHeadPRM(ValueHeadModel(lora, base_model=str(tiny_model_dir)), tok, step_token="\n\n")
    before = prm.score(QUESTION, STEPS)
    out = prm.save_pretrained(tmp_path / "lora_prm")
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    meta = read_format(out)
    assert meta["adapter"] is True and meta["base_model"] == str(tiny_model_dir) and meta["step_token"] == "\n\n"
    loaded = ValueHeadPRM.from_pretrained(out, device="cpu")
    assert loaded.step_token == "\n\n"
    assert loaded.score(QUESTION, STEPS) == pytest.approx(before, abs=1e-6)
    # the adapter matters: the bare base with the same head scores differently
    bare = ValueHeadPRM(ValueHeadModel(load_model(str(tiny_model_dir), device="cpu")[0], loaded.model.v_head), tok,
                        step_token="\n\n")
    assert bare.score(QUESTION, STEPS) != pytest.approx(before, abs=1e-4)


def test_stage_directory_and_skywork_native_checkpoint(prm, tmp_path, tiny_model_dir):
    from safetensors.torch import load_file, save_file

    # a stage directory with the checkpoint in checkpoint/ loads as is
    prm.save_pretrained(tmp_path / "stage" / "checkpoint")
    assert is_value_head_checkpoint(tmp_path / "stage")
    assert ValueHeadPRM.from_pretrained(tmp_path / "stage", device="cpu").score(QUESTION, STEPS) == \
        pytest.approx(prm.score(QUESTION, STEPS), abs=1e-6)
    # Skywork's own layout: v_head.* inside model.safetensors, no prm_format.json
    native = tmp_path / "skywork"
    prm.model.backbone.save_pretrained(native)
    prm.tokenizer.save_pretrained(native)
    weights = load_file(str(native / "model.safetensors"))
    weights["v_head.summary.weight"] = prm.model.v_head.summary.weight.detach().clone()
    weights["v_head.summary.bias"] = prm.model.v_head.summary.bias.detach().clone()
    save_file(weights, str(native / "model.safetensors"), metadata={"format": "pt"})
    assert read_format(native)["format"] == "skywork" and is_value_head_checkpoint(native)
    loaded = ValueHeadPRM.from_pretrained(native, device="cpu")
    assert loaded.score(QUESTION, STEPS) == pytest.approx(prm.score(QUESTION, STEPS), abs=1e-6)
    # a plain causal LM is not a PRM
    assert not is_value_head_checkpoint(tiny_model_dir)
    assert not is_value_head_checkpoint(tmp_path / "missing")
    with pytest.raises(PRMFormatError, match="not a value-head checkpoint"):
        ValueHeadPRM.from_pretrained(tiny_model_dir, device="cpu")


def test_other_formats_are_refused(tmp_path):
    d = tmp_path / "orm"
    d.mkdir()
    (d / FORMAT_FILE).write_text(json.dumps({"format": "orm"}))
    assert not is_value_head_checkpoint(d)
    with pytest.raises(PRMFormatError, match="outcome reward model"):
        ValueHeadPRM.from_pretrained(d, device="cpu")
    (d / FORMAT_FILE).write_text("{not json")
    assert not is_value_head_checkpoint(d)
    with pytest.raises(PRMFormatError, match="malformed JSON"):
        ValueHeadPRM.from_pretrained(d, device="cpu")


def test_works_under_bf16_autocast_dtype(backbone_and_tok, tiny_model_dir):
    """A bf16 backbone still gives fp32 values and finite scores (the head stays fp32)."""
    from openrft.models.loading import load_model

    model, tok = load_model(str(tiny_model_dir), device="cpu", dtype="bf16")
    vh = ValueHeadModel(model)
    ids, flags = encode_steps(tok, QUESTION, STEPS)
    values = vh(torch.tensor([ids]))
    assert values.dtype == torch.float32 and values.shape == (1, len(ids))
    assert torch.isfinite(values[0, flags]).all()


@pytest.mark.slow
def test_bundled_smollm2_backbone(smollm2, tmp_path):
    """The real bundled model as a backbone: causal one-pass scores, batch invariance, and a save/load round trip."""
    model, tok = smollm2
    torch.manual_seed(0)
    prm = ValueHeadPRM(ValueHeadModel(model, base_model="smollm2-135m"), tok, batch_size=4)
    full = prm.score(QUESTION, STEPS)
    assert full == pytest.approx([prm.score(QUESTION, STEPS[:k + 1])[-1] for k in range(3)], abs=1e-4)
    batch = prm.score_batch([QUESTION, "Short?", QUESTION], [STEPS, ["x"], STEPS[:2]])
    assert batch[0] == pytest.approx(full, abs=1e-4) and batch[2] == pytest.approx(full[:2], abs=1e-4)
    loaded = ValueHeadPRM.from_pretrained(prm.save_pretrained(tmp_path / "p"), device="cpu")
    assert loaded.score(QUESTION, STEPS) == pytest.approx(full, abs=1e-5)
