"""Token-classification PRM (Qwen2.5-Math-PRM layout) on a tiny random Qwen2 written to disk in that layout."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from openrft.rewards.prm.base import PRMFormatError
from openrft.rewards.prm.loader import detect_format, load_scorer
from openrft.rewards.prm.token_class import QWEN_PRM_SYSTEM, TokenClassPRM

torch.set_num_threads(1)

QUESTION = "Tom has 3 apples and buys 4 more. How many apples does he have?"
SOLUTIONS = [
    ["Tom starts with 3 apples.", "He buys 4 more, so 3 + 4 = 7.", "The answer is \\boxed{7}."],
    ["3 * 4 = 12.", "The answer is 12."],
    [],
    ["He has 7 apples; a stray <extra_0> in the text is dropped."],
]


def write_qwen_prm(path, tokenizer, head_layers: str = "mlp", outputs: int = 2, architectures=("Qwen2ForProcessRewardModel",)):
    """A tiny Qwen2 PRM: ``model.*`` backbone + ``score.*`` head tensors in model.safetensors, like the released one."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    config.architectures = list(architectures)
    config.auto_map = {"AutoModel": "modeling_qwen2_rm.Qwen2ForProcessRewardModel"}  # remote code that is not there
    config.num_labels = outputs
    backbone = Qwen2Model(config).eval()
    if head_layers == "mlp":
        head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, outputs))
    else:
        head = nn.Linear(32, outputs)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.3)  # spread the probabilities so a wrong position shows
    state = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()}
    state.update({f"score.{k}": v.contiguous() for k, v in head.state_dict().items()})
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return backbone, head.eval()


@pytest.fixture(scope="module")
def prm_tokenizer(bundled_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_tokenizer.name_or_path)
    tok.add_tokens(["<extra_0>"], special_tokens=True)
    return tok


@pytest.fixture(scope="module")
def qwen_prm(tmp_path_factory, prm_tokenizer):
    path = tmp_path_factory.mktemp("qwen-prm")
    backbone, head = write_qwen_prm(path, prm_tokenizer)
    return path, backbone, head


def reference_scores(backbone, head, tokenizer, question, steps):
    """One unbatched forward per step prefix; the score is read at the last <extra_0> of the prefix."""
    sep = tokenizer.convert_tokens_to_ids("<extra_0>")
    out = []
    for k in range(1, len(steps) + 1):
        answer = "<extra_0>".join(s.replace("<extra_0>", "") for s in steps[:k]) + "<extra_0>"
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": QWEN_PRM_SYSTEM}, {"role": "user", "content": question},
             {"role": "assistant", "content": answer}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            probs = torch.softmax(head(backbone(ids).last_hidden_state[0]), -1)[:, 1]
        last = (ids[0] == sep).nonzero()[-1].item()
        out.append(probs[last].item())
    return out


def test_loads_offline_and_matches_per_prefix_reference(qwen_prm, prm_tokenizer):
    path, backbone, head = qwen_prm
    assert detect_format(path) == ("token_class", {})
    scorer = load_scorer(str(path), device="cpu", batch_size=2)
    assert isinstance(scorer, TokenClassPRM)
    got = scorer.score_batch([QUESTION] * len(SOLUTIONS), SOLUTIONS)
    assert [len(g) for g in got] == [3, 2, 0, 1]
    for steps, scores in zip(SOLUTIONS, got):
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == pytest.approx(reference_scores(backbone, head, prm_tokenizer, QUESTION, steps), abs=1e-5)
    flat = [s for g in got for s in g]
    assert max(flat) - min(flat) > 1e-3  # 100x the tolerance: a wrong position would show
    # 3 solutions with steps, 2 per forward: 2 forwards; the empty one never reaches the model
    assert scorer.forward_passes == 2


def test_batching_and_padding_do_not_change_scores(qwen_prm):
    path, _, _ = qwen_prm
    one = load_scorer(str(path), device="cpu", format="token_class", batch_size=1)
    many = load_scorer(str(path), device="cpu", format="token_class", batch_size=8)
    questions = [QUESTION, "What is 2 + 2?", QUESTION]
    sols = [SOLUTIONS[0], ["2 + 2 = 4.", "So \\boxed{4}."], SOLUTIONS[1]]
    a, b = one.score_batch(questions, sols), many.score_batch(questions, sols)
    for x, y in zip(a, b):
        assert x == pytest.approx(y, abs=1e-5)
    assert (one.forward_passes, many.forward_passes) == (3, 1)
    assert one.score(QUESTION, []) == [] and one.forward_passes == 3


def test_linear_head_and_bad_heads(tmp_path, prm_tokenizer, bundled_tokenizer):
    lin = tmp_path / "linear"
    backbone, head = write_qwen_prm(lin, prm_tokenizer, head_layers="linear", architectures=("Qwen2ForTokenClassification",))
    assert detect_format(lin)[0] == "token_class"  # score.* head with 2 outputs + <extra_0> in the tokenizer
    scorer = TokenClassPRM.from_pretrained(str(lin), device="cpu")
    steps = SOLUTIONS[0]
    assert scorer.score(QUESTION, steps) == pytest.approx(
        reference_scores(backbone, head, prm_tokenizer, QUESTION, steps), abs=1e-5)

    three = tmp_path / "three"
    write_qwen_prm(three, prm_tokenizer, outputs=3)
    with pytest.raises(PRMFormatError, match="3 outputs"):
        TokenClassPRM.from_pretrained(str(three), device="cpu")

    no_sep = tmp_path / "no-sep"
    write_qwen_prm(no_sep, prm_tokenizer)
    bundled_tokenizer.save_pretrained(no_sep)  # a tokenizer without <extra_0>
    with pytest.raises(PRMFormatError, match="one .*token"):
        TokenClassPRM.from_pretrained(str(no_sep), device="cpu")


def test_missing_backbone_weights_is_a_format_error(tmp_path, prm_tokenizer):
    path = tmp_path / "renamed"
    write_qwen_prm(path, prm_tokenizer)
    from safetensors.torch import load_file, save_file

    state = load_file(str(path / "model.safetensors"))
    save_file({k.replace("model.", "transformer.", 1): v for k, v in state.items()}, str(path / "model.safetensors"))
    with pytest.raises(PRMFormatError, match="backbone weights were not found"):
        TokenClassPRM.from_pretrained(str(path), device="cpu")
    assert json.loads((path / "config.json").read_text())["architectures"] == ["Qwen2ForProcessRewardModel"]
