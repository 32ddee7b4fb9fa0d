import torch

from openrft.rl.advantages import AdvantageSettings, compute_advantages
from openrft.rl.rollout import build_batch, char_to_token_ends, place_step_rewards
from openrft.rewards.steps import split_steps


def test_select_trims_padding_and_keeps_alignment():
    b = build_batch([[5, 6, 7], [8], [9, 9]], [[1], [2, 3, 4], [5, 6]], [0, 0, 1], [1.0, 0.0, 0.5], pad_id=0)
    sub = b.select([1, 2])
    # the widest prompt among rows 1,2 has 2 tokens, the longest response 3
    assert sub.prompt_width == 2 and sub.response_width == 3
    assert sub.input_ids.tolist() == [[0, 8, 2, 3, 4], [9, 9, 5, 6, 0]]
    assert sub.position_ids.tolist()[0][1:4] == [0, 1, 2]
    assert sub.response_ids.tolist() == [[2, 3, 4], [5, 6, 0]]
    assert sub.scores.tolist() == [0.0, 0.5] and sub.group_ids.tolist() == [0, 1]
    # response columns start at prompt_width in every row
    for r in range(2):
        n = int(sub.response_mask[r].sum())
        assert sub.input_ids[r, sub.prompt_width:sub.prompt_width + n].tolist() == sub.response_ids[r, :n].tolist()


def test_char_to_token_ends_points_at_the_token_holding_the_last_char(bundled_tokenizer):
    text = "Step 1: 12+30=42.\nStep 2: café × 2 = ?\nStep 3: the answer is 84."
    ids = bundled_tokenizer(text, add_special_tokens=False)["input_ids"]
    steps = split_steps(text, "newline")
    ends = char_to_token_ends(bundled_tokenizer, ids, [s.end for s in steps])
    assert ends == sorted(ends) and ends[-1] == len(ids) - 1
    for s, e in zip(steps, ends):
        upto = bundled_tokenizer.decode(ids[:e + 1])
        before = bundled_tokenizer.decode(ids[:e])
        assert len(upto) >= s.end > len(before)


def test_dense_rewards_wrong_middle_step_lowers_only_that_steps_tokens(bundled_tokenizer):
    """The issue's dense-reward check: a completion whose middle step the PRM scores 0 gets a lower
    advantage on that step's tokens only; the other steps' tokens keep equal advantages."""
    texts = ["Step 1: 2+3=5.\nStep 2: 5*2=10.\nStep 3: The answer is 10."] * 4
    texts[1] = "Step 1: 2+3=5.\nStep 2: 5*2=11.\nStep 3: The answer is 10."
    ids = [bundled_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    scores = [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    alpha = 0.7
    step_rw = [[(s.end, (1 - alpha) * sc) for s, sc in zip(split_steps(t, "newline"), ss)]
               for t, ss in zip(texts, scores)]
    batch = build_batch([[1, 2]] * 4, ids, [0, 0, 0, 0], [alpha * 1.0] * 4, pad_id=0)
    batch.step_rewards, batch.step_mask = place_step_rewards(bundled_tokenizer, ids, step_rw, batch.response_width)
    assert int(batch.step_mask.sum()) == 12
    for name in ("grpo", "rloo"):
        out = compute_advantages(name, scores=batch.scores, mask=batch.response_mask, group_ids=batch.group_ids,
                                 config=AdvantageSettings(step_credit="local"), step_rewards=batch.step_rewards,
                                 step_mask=batch.step_mask)
        adv = out.advantages[1]
        ends = batch.step_mask[1].nonzero().flatten().tolist()
        s1, s2, s3 = adv[: ends[0] + 1], adv[ends[0] + 1: ends[1] + 1], adv[ends[1] + 1: ends[2] + 1]
        assert torch.allclose(s1, s1[0].expand_as(s1)) and torch.allclose(s3, s3[0].expand_as(s3))
        assert torch.allclose(s1[0], s3[0]), name
        assert (s2 < s1[0] - 1e-3).all(), name
        # the correct completions' tokens are all credited alike and above the wrong step
        assert torch.allclose(out.advantages[0][: len(ids[0])], out.advantages[0][0].expand(len(ids[0])))


def test_a_step_ending_in_a_multi_byte_character_ends_at_the_token_that_completes_it(bundled_tokenizer):
    """'✓' and '🎉' take several byte tokens: the step ends where the character is complete, not at its first byte."""
    text = "First, 12 × 3 = 36 → ok.\nThen 36 + 4 = 40 ✓\nThe answer is 40 🎉"
    ids = bundled_tokenizer(text, add_special_tokens=False)["input_ids"]
    steps = split_steps(text, "newline")
    assert char_to_token_ends(bundled_tokenizer, ids, [s.end for s in steps]) == [14, 29, 39]
