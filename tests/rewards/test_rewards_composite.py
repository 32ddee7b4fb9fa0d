"""CompositeReward: outcome + PRM + user functions, dense and not, against hand-computed totals."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from openrft.data.sample import Sample
from openrft.rewards import CompositeReward, RewardSettings, build_reward
from openrft.rewards.prm.base import ProcessScorer

NUM = Sample(id="n", task="gsm8k", question="Tom has 3 apples and buys 4. How many?", answer="7", answer_type="numeric")
MCQ = Sample(id="m", task="chem", question="Which is a noble gas?", choices=("Neon", "Iron"), answer="A",
             answer_type="mcq")
COMPLETIONS = ["3 + 4 = 7\nThe answer is 7.", "3 * 4 = 12\nSo 12.", "", "Neon is inert.\n\nThe answer is A."]
SAMPLES = [NUM, NUM, NUM, MCQ]


class EqualsScorer(ProcessScorer):
    """A real, deterministic scorer: 0.9 for a step with '=' or 'answer', 0.3 otherwise; records its calls."""

    name = "equals"

    def __init__(self):
        self.calls = []

    def score_batch(self, questions: Sequence[str], steps: Sequence[Sequence[str]]) -> list[list[float]]:
        self.calls.append((list(questions), [list(s) for s in steps]))
        return [[0.9 if ("=" in s or "answer" in s) else 0.3 for s in st] for st in steps]


def test_non_dense_total_and_parts():
    scorer = EqualsScorer()
    reward = CompositeReward(RewardSettings(alpha=0.6, agg="min", partial_credit=0.1), scorer=scorer)
    batch = reward(SAMPLES, COMPLETIONS)
    # one scorer call per batch; only completions with steps; questions as the task renders them (MCQ with options)
    assert len(scorer.calls) == 1
    questions, steps = scorer.calls[0]
    assert questions == [NUM.question, NUM.question, "Which is a noble gas?\n\nA. Neon\nB. Iron"]
    assert steps == [["3 + 4 = 7", "The answer is 7."], ["3 * 4 = 12", "So 12."], ["Neon is inert.", "The answer is A."]]
    assert batch.outcome == [1.0, 0.1, 0.0, 1.0] and batch.correct == [True, False, False, True]
    assert batch.parts["process"] == [0.9, 0.3, 0.0, 0.3]  # min; the empty completion gets the worst, 0.0
    assert batch.parts["no_steps"] == [0.0, 0.0, 1.0, 0.0] and batch.parts["n_steps"] == [2.0, 2.0, 0.0, 2.0]
    expected = [0.6 * o + 0.4 * p for o, p in zip(batch.outcome, batch.parts["process"])]
    assert batch.rewards == pytest.approx(expected)
    assert batch.step_rewards() == [[], [], [], []]  # not dense: the process part is already in rewards
    summary = batch.summary()
    assert summary["reward/mean"] == pytest.approx(sum(expected) / 4)
    assert summary["correct/mean"] == 0.5 and summary["no_steps/mean"] == 0.25 and summary["outcome/std"] > 0


def test_the_answer_line_can_be_left_to_the_outcome_term():
    """score_answer_step=False (OpenRFT): the PRM scores the reasoning steps only; a one-step reply is still scored."""
    scorer = EqualsScorer()
    reward = CompositeReward(RewardSettings(alpha=0.6, agg="min", score_answer_step=False), scorer=scorer)
    batch = reward([NUM, NUM, NUM], ["3 + 4 = 7\nThe answer is 7.", "3 * 4 = 12\nSo 12.", "So 7."])
    assert scorer.calls[0][1] == [["3 + 4 = 7"], ["3 * 4 = 12"], ["So 7."]]
    assert batch.parts["process"] == [0.9, 0.9, 0.3] and batch.parts["n_steps"] == [1.0, 1.0, 1.0]


def test_dense_places_step_scores_at_step_ends():
    reward = CompositeReward(RewardSettings(alpha=0.7, dense=True), scorer=EqualsScorer())
    batch = reward(SAMPLES, COMPLETIONS)
    assert batch.rewards == pytest.approx([0.7, 0.0, 0.0, 0.7])  # alpha * outcome only
    dense = batch.step_rewards()
    assert len(dense) == 4 and dense[2] == []
    for text, steps, placed in zip(COMPLETIONS, batch.steps, dense):
        assert [end for end, _ in placed] == [s.end for s in steps]
        for (end, _), s in zip(placed, steps):
            assert text[:end].endswith(s.text)
    assert [v for _, v in dense[0]] == pytest.approx([0.3 * 0.9, 0.3 * 0.9])
    assert [v for _, v in dense[3]] == pytest.approx([0.3 * 0.3, 0.3 * 0.9])
    assert batch.parts["process"] == pytest.approx([0.9, 0.6, 0.0, 0.6])  # still logged (mean)


def test_outcome_only_and_extra_functions(tmp_path):
    (tmp_path / "fmt.py").write_text(
        "def short(prompts, completions, **kw):\n"
        "    short.prompts = prompts\n"
        "    return [None if not c else float(len(c) < 20) for c in completions]\n"
    )
    config = RewardSettings(functions=[f"{tmp_path / 'fmt.py'}:short@0.5"])
    reward = CompositeReward(config)
    batch = reward(SAMPLES, COMPLETIONS)
    assert batch.steps is None and batch.step_scores is None and "process" not in batch.parts
    assert batch.parts["fn/short"] == [0.0, 1.0, 0.0, 0.0]
    assert batch.parts["fn/short/applies"] == [1.0, 1.0, 0.0, 1.0]
    assert batch.rewards == [1.0, 0.5, 0.0, 1.0]  # alpha is ignored without a PRM
    fn = reward.functions[0].fn
    assert fn.prompts[3][-1]["role"] == "user" and "A. Neon" in fn.prompts[3][-1]["content"]
    reward(SAMPLES, COMPLETIONS, prompts=["p0", "p1", "p2", "p3"])
    assert fn.prompts == ["p0", "p1", "p2", "p3"]
    assert batch.summary()["fn/short/applies/mean"] == 0.75


def test_bad_scorers_and_config_are_caught():
    class OutOfRange(EqualsScorer):
        def score_batch(self, questions, steps):
            return [[1.2] * len(s) for s in steps]

    class TooFew(EqualsScorer):
        def score_batch(self, questions, steps):
            return [[0.5] for _ in steps]

    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        CompositeReward(RewardSettings(), scorer=OutOfRange())(SAMPLES, COMPLETIONS)
    with pytest.raises(ValueError, match="returned 1 step scores for 2 steps"):
        CompositeReward(RewardSettings(), scorer=TooFew())(SAMPLES, COMPLETIONS)
    with pytest.raises(ValueError, match="alpha"):
        RewardSettings(alpha=1.1)
    with pytest.raises(ValueError, match="unknown step aggregator"):
        RewardSettings(agg="median")
    with pytest.raises(ValueError, match="unknown step rule"):
        RewardSettings(step_rule="sentences")
    with pytest.raises(ValueError, match="expected 'package.module:function'"):
        RewardSettings(functions=["not_a_spec"])
    with pytest.raises(ValueError, match="use build_reward"):
        CompositeReward(RewardSettings(prm="some/prm"))


def test_build_reward_loads_a_prm_checkpoint(tiny_model_dir):
    config = RewardSettings(prm=str(tiny_model_dir), prm_format="math_shepherd", prm_device="cpu", alpha=0.5)
    reward = build_reward(config)
    batch = reward(SAMPLES, COMPLETIONS)
    scores = batch.step_scores
    assert [len(s) for s in scores] == [2, 2, 0, 2]
    assert all(0.0 <= x <= 1.0 for s in scores for x in s)
    assert batch.rewards[0] == pytest.approx(0.5 * 1.0 + 0.5 * sum(scores[0]) / 2)
    reward.close()


def test_a_local_prm_computes_in_the_policys_dtype_unless_told(tiny_model_dir):
    """RL passes its dtype: a bf16 policy's reward scores with a bf16 PRM; ``prm_dtype``, when given, wins."""
    import torch

    base = {"prm": str(tiny_model_dir), "prm_format": "math_shepherd", "prm_device": "cpu"}
    for settings, policy, expected in ((base, "bfloat16", torch.bfloat16), (base, "auto", torch.float32),
                                       (base | {"prm_dtype": "float32"}, "bfloat16", torch.float32)):
        reward = build_reward(RewardSettings(**settings), policy)
        assert next(reward.scorer.model.parameters()).dtype == expected
        reward.close()
