"""Math-Shepherd PRM on tiny random Llamas: tag as one token (detected) and as two (forced by the marker)."""

from __future__ import annotations

import shutil

import pytest
import torch

from openrft.rewards.prm.base import PRMFormatError
from openrft.rewards.prm.loader import detect_format, load_scorer, write_marker
from openrft.rewards.prm.math_shepherd import MathShepherdPRM, render_math_shepherd

torch.set_num_threads(1)

QUESTION = "Janet has 16 eggs, eats 3 and bakes 4. How many are left?"
SOLUTIONS = [
    ["Step 1: 16 - 3 = 13.", "Step 2: 13 - 4 = 9.", "Step 3: The answer is 9."],
    [],
    ["Step 1: 16 - 3 - 4 = 10.", "Step 2: The answer is 10."],
    ["Step 1: 9 eggs."],
]


@pytest.fixture(scope="module")
def shepherd_dir(tmp_path_factory, bundled_tokenizer):
    """A tiny Llama whose tokenizer has the tag ``ки`` as one token, as the released Mistral checkpoint does."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(bundled_tokenizer.name_or_path)
    tok.add_tokens(["ки"])
    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("shepherd")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model.eval(), tok


def reference_scores(model, tokenizer, question, steps, candidates=("+", "-"), tag="ки"):
    """One unbatched forward per step prefix; P(good) from the full logits at the prefix's last token."""
    ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in candidates]
    out = []
    for k in range(1, len(steps) + 1):
        text, _ = render_math_shepherd(question, steps[:k], tag)
        assert text.endswith(tag)
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0, -1]
        out.append(torch.softmax(logits[ids], -1)[0].item())
    return out


def test_detected_and_matches_per_prefix_reference(shepherd_dir):
    path, model, tok = shepherd_dir
    assert detect_format(path) == ("math_shepherd", {})
    scorer = load_scorer(str(path), device="cpu", batch_size=2)
    assert isinstance(scorer, MathShepherdPRM)
    got = scorer.score_batch([QUESTION] * len(SOLUTIONS), SOLUTIONS)
    assert [len(g) for g in got] == [3, 0, 2, 1]
    for steps, scores in zip(SOLUTIONS, got):
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == pytest.approx(reference_scores(model, tok, QUESTION, steps), abs=1e-5)
    assert scorer.forward_passes == 2  # 3 solutions with steps, 2 per forward
    ids, positions = scorer.encode(QUESTION, SOLUTIONS[0])
    assert [tok.decode(ids[p]) for p in positions] == ["ки"] * 3


def test_one_forward_per_solution_equals_batched(shepherd_dir):
    path, _, _ = shepherd_dir
    single = MathShepherdPRM.from_pretrained(str(path), device="cpu", batch_size=1)
    batched = MathShepherdPRM.from_pretrained(str(path), device="cpu", batch_size=16)
    a = single.score_batch([QUESTION] * 4, SOLUTIONS)
    b = batched.score_batch([QUESTION] * 4, SOLUTIONS)
    for x, y in zip(a, b):
        assert x == pytest.approx(y, abs=1e-5)
    assert (single.forward_passes, batched.forward_passes) == (3, 1)
    assert batched.score_batch([QUESTION, QUESTION], [[], []]) == [[], []]
    assert batched.forward_passes == 1  # no steps: the model never runs


def test_multi_token_tag_with_marker_and_custom_candidates(tmp_path, tiny_model_dir, smollm2_tiny_ref):
    """SmolLM2's tokenizer splits ``ки`` in two: undetectable, but scored right once the marker names the format."""
    path = tmp_path / "ms"
    shutil.copytree(tiny_model_dir, path)
    with pytest.raises(PRMFormatError, match="step tag 'ки' is 2 token"):
        detect_format(path)
    write_marker(path, "math_shepherd", candidates=[" +", " -"])
    scorer = load_scorer(str(path), device="cpu")
    model, tok = smollm2_tiny_ref
    assert scorer.candidate_ids == [tok.encode(" +")[0], tok.encode(" -")[0]]
    steps = SOLUTIONS[0]
    ids, positions = scorer.encode(QUESTION, steps)
    assert [tok.decode(ids[p - 1: p + 1]).strip() for p in positions] == ["ки"] * 3  # read at the tag's last token
    assert {tok.decode(ids[p]) for p in positions} == {"и"}
    assert scorer.score(QUESTION, steps) == pytest.approx(
        reference_scores(model, tok, QUESTION, steps, candidates=(" +", " -")), abs=1e-5)


@pytest.fixture
def smollm2_tiny_ref(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_bad_candidates_and_too_long(shepherd_dir):
    _, model, tok = shepherd_dir
    with pytest.raises(PRMFormatError, match="candidate 'correct answer' is"):
        MathShepherdPRM(model, tok, candidates=("correct answer", "-"))
    with pytest.raises(ValueError, match="same token"):
        MathShepherdPRM(model, tok, candidates=("+", "+"))
    short = MathShepherdPRM(model, tok, max_length=10)
    with pytest.raises(ValueError, match="over the scorer's limit of 10"):
        short.score(QUESTION, SOLUTIONS[0])
