"""Generative judge: left-padded batched step prompts against one unpadded forward per prompt."""

from __future__ import annotations

import pytest
import torch

from openrft.rewards.prm.judge import JudgePRM, single_token_ids
from openrft.rewards.prm.loader import load_scorer

torch.set_num_threads(1)

QUESTION = "What is 2 + 3?"
SOLUTIONS = [["2 + 3 = 5.", "The answer is 5."], [], ["2 + 3 = 7.", "So 7 is wrong?", "The answer is 7."]]


def reference_scores(judge: JudgePRM, question, steps):
    """One unpadded forward per step prompt; P(yes) / (P(yes) + P(no)) from the full softmax."""
    out = []
    for k in range(1, len(steps) + 1):
        ids = judge.tokenizer(judge.prompt(question, steps, k), add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            probs = torch.softmax(judge.model(ids.to(judge.device)).logits[0, -1].float(), -1)
        yes, no = probs[judge.yes_ids].sum(), probs[judge.no_ids].sum()
        out.append((yes / (yes + no)).item())
    return out


@pytest.fixture(scope="module")
def tiny_judge(tiny_model_dir):
    return load_scorer(f"judge:{tiny_model_dir}", device="cpu", batch_size=2)


def test_batched_left_padded_scores_match_reference(tiny_judge):
    got = tiny_judge.score_batch([QUESTION, QUESTION, "What is the capital of France, in one word?"], SOLUTIONS)
    assert [len(g) for g in got] == [2, 0, 3]
    for steps, scores, q in zip(SOLUTIONS, got, [QUESTION, QUESTION, "What is the capital of France, in one word?"]):
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert scores == pytest.approx(reference_scores(tiny_judge, q, steps), abs=1e-5)
    assert tiny_judge.forward_passes == 3  # 5 step prompts, 2 per forward
    before = tiny_judge.forward_passes
    assert tiny_judge.score_batch([QUESTION], [[]]) == [[]]
    assert tiny_judge.forward_passes == before


def test_prompt_shows_steps_up_to_k_and_variants(tiny_judge):
    text = tiny_judge.prompt(QUESTION, SOLUTIONS[2], 2)
    assert "Step 1: 2 + 3 = 7." in text and "Step 2: So 7 is wrong?" in text and "Step 3" not in text
    assert "Is step 2 correct?" in text and text.rstrip().endswith("assistant")
    tok = tiny_judge.tokenizer
    assert set(tiny_judge.yes_ids) == {tok.encode(v, add_special_tokens=False)[0] for v in ("yes", "Yes", " yes", " Yes")}
    assert single_token_ids(tok, ["YES", "yes"]) == [tok.encode("yes", add_special_tokens=False)[0]]  # YES is 2 tokens here


@pytest.mark.slow
def test_smollm2_judge(smollm2):
    model, tok = smollm2
    judge = JudgePRM(model, tok, batch_size=8)
    got = judge.score_batch([QUESTION, QUESTION], [SOLUTIONS[0], SOLUTIONS[2]])
    assert [len(g) for g in got] == [2, 3]
    assert all(0.0 < s < 1.0 for g in got for s in g)
    assert got[0] == pytest.approx(reference_scores(judge, QUESTION, SOLUTIONS[0]), abs=1e-4)
    assert judge.forward_passes == 1
