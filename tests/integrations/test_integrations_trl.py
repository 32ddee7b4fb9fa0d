"""openrft's graders and composite reward as trl reward functions, on real bundled samples, with no model."""

from __future__ import annotations

from collections import defaultdict

import pytest
from trl.trainer.utils import get_callable_name

from openrft.data.loaders import load_bundled, load_sources
from openrft.integrations.trl import (
    SAMPLE_COLUMN, TrlReward, composite_reward, outcome_reward, row_samples, trl_dataset, trl_rows,
)
from openrft.rewards.base import CompositeReward, RewardSettings
from openrft.tasks import task_for


@pytest.fixture(scope="module")
def samples():
    """A GSM8K question (numeric) and a SciKnowEval one (multiple choice)."""
    return [load_bundled("gsm8k", "train")[0], load_sources(["sciknoweval/chemical_calculation"], split="train")[0]]


def _right(sample) -> str:
    return task_for(sample).render_answer(sample)


WRONG = {"numeric": "48 + 1 = 49. The answer is \\boxed{49}.", "mcq": "The answer is \\boxed{D}."}


def _batch(samples, conversational: bool):
    """trl's call for one right and one wrong completion per sample: columns repeated per completion."""
    rows = [r for r in trl_rows(samples) for _ in range(2)]
    texts = [t for s in samples for t in (_right(s), WRONG[s.answer_type])]
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    return [r["prompt"] for r in rows], completions, columns


def test_the_dataset_carries_the_tasks_own_prompt_and_what_grading_needs(samples):
    ds = trl_dataset(samples)
    assert ds.column_names == ["prompt", "answer", "answer_type", "choices", "task", "id", "question", SAMPLE_COLUMN]
    assert [row["prompt"] for row in ds] == [task_for(s).messages(s) for s in samples]
    assert ds["answer"] == ["72", "A"] and ds["answer_type"] == ["numeric", "mcq"]
    assert ds["choices"][0] is None and ds["choices"][1] == list(samples[1].choices)
    assert row_samples(ds["prompt"], {SAMPLE_COLUMN: ds[SAMPLE_COLUMN]}) == samples  # lossless, meta included
    assert [s.meta for s in row_samples(ds["prompt"], {SAMPLE_COLUMN: ds[SAMPLE_COLUMN]})] == [s.meta for s in samples]


def test_few_shot_examples_become_earlier_turns(samples):
    shot = load_bundled("gsm8k", "train")[1]
    (row,) = trl_rows(samples[:1], examples_for=lambda s: [shot])
    assert row["prompt"] == task_for(samples[0]).messages(samples[0], [shot]) and len(row["prompt"]) == 3


@pytest.mark.parametrize("conversational", [True, False])
def test_right_answers_score_one_and_wrong_ones_zero(samples, conversational):
    prompts, completions, columns = _batch(samples, conversational)
    assert outcome_reward()(prompts, completions, **columns) == [1.0, 0.0, 1.0, 0.0]
    assert outcome_reward(partial_credit=0.1)(prompts, completions, **columns) == [1.0, 0.1, 1.0, 0.1]


def test_a_completion_without_an_answer_is_wrong_and_a_row_without_grading_data_is_none(samples):
    prompts, completions, columns = _batch(samples[:1], conversational=False)
    columns[SAMPLE_COLUMN] = [None, None]
    columns["answer"] = ["72", None]  # the second row belongs to another reward function
    got = outcome_reward()(prompts, ["I am not sure.", _right(samples[0])], **columns)
    assert got == [0.0, None]


def test_a_dataset_of_ones_own_grades_from_its_answer_column():
    """No openrft columns: the question comes from the prompt, the answer type from the function."""
    prompts = [[{"role": "user", "content": "What is 6 * 7?"}]] * 2
    completions = [[{"role": "assistant", "content": "6 * 7 = 42"}], [{"role": "assistant", "content": "41"}]]
    reward = outcome_reward(answer_type="numeric")
    assert reward(prompts, completions, answer=[42, 42]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="no answer type: add an 'answer_type' column"):
        outcome_reward()(prompts, completions, answer=["42", "42"])


def test_trl_names_the_functions_and_they_log_their_parts(samples):
    prompts, completions, columns = _batch(samples, conversational=True)
    metrics, extra = defaultdict(list), {}
    reward = outcome_reward()
    reward(prompts, completions, **columns, log_metric=lambda k, v: metrics[k].append(v),
           log_extra=lambda k, v: extra.setdefault(k, v), trainer_state=None, completion_ids=[[1]] * 4)
    assert get_callable_name(reward) == "openrft_outcome"
    assert get_callable_name(composite_reward(RewardSettings())) == "openrft_reward"
    assert metrics["openrft_outcome/correct"] == [0.5] and metrics["openrft_outcome/has_answer"] == [1.0]
    assert extra["openrft_outcome/extracted"] == ["72", "49", "A", "D"]


def test_the_composite_reward_adds_the_configured_functions(samples, tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text("def short(prompts, completions, **kw):\n"
                    "    return [1.0 if len(c) < 40 else 0.0 for c in completions]\n")
    reward = composite_reward(RewardSettings(functions=[f"{path}:short@0.5"]))
    prompts, completions, columns = _batch(samples[1:], conversational=True)
    assert reward(prompts, completions, **columns) == [1.5, 0.5]  # both are short: +0.5 each


def test_dense_rewards_do_not_fit_a_trl_reward_function():
    with pytest.raises(ValueError, match="dense per-step rewards need 'openrft rl'"):
        composite_reward(RewardSettings(dense=True))
    with pytest.raises(ValueError, match="one reward per completion"):
        TrlReward(CompositeReward(RewardSettings(dense=True)))
