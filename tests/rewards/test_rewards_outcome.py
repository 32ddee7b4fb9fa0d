"""Outcome reward through the task graders, ReFT partial credit, and batched grading per task."""

from __future__ import annotations

import pytest

from openrft.data.sample import Sample
from openrft.rewards.outcome import OutcomeReward
from openrft.tasks import Grade, MCQTask, NumericTask, grade_all

NUM = Sample(id="n", task="gsm8k", question="9 eggs at $2 each?", answer="18", answer_type="numeric")
MCQ = Sample(id="m", task="chem", question="Which is a noble gas?", choices=("Neon", "Sodium", "Iron"), answer="A",
             answer_type="mcq")


def test_partial_credit_for_extracted_but_wrong_answers():
    reward = OutcomeReward(partial_credit=0.1)
    samples = [NUM, NUM, NUM, MCQ, MCQ, MCQ, NUM]
    completions = ["9 * 2 = 18. The answer is \\boxed{18}.", "The answer is \\boxed{17}.", "I am not sure.",
                   "The answer is A.", "The answer is (B).", "A or C, hard to say.", "   "]
    graded = reward.grade(samples, completions)
    assert graded.rewards == [1.0, 0.1, 0.0, 1.0, 0.1, 0.0, 0.0]
    assert graded.correct == [True, False, False, True, False, False, False]
    assert graded.extracted == ["18", "17", None, "A", "B", None, None]
    assert reward(samples, completions) == graded.rewards
    assert OutcomeReward()(samples, completions) == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]


def test_same_verdict_as_the_task_grader():
    completions = ["She makes $18.00 a day.", "17 or 18", "18.1"]
    grades = grade_all([NUM] * 3, completions)
    assert grades == [NumericTask().grade(c, NUM) for c in completions]
    loose = grade_all([NUM] * 3, completions, tasks={"numeric": NumericTask(rel_tol=0.01)})
    assert [g.correct for g in loose] == [True, False, True]


def test_grade_batch_is_called_once_per_task_group():
    class CountingMCQ(MCQTask):
        calls = 0

        def grade_batch(self, completions, samples):
            CountingMCQ.calls += 1
            return [self.grade(c, s) for c, s in zip(completions, samples)]

    tasks = {"mcq": CountingMCQ()}
    grades = grade_all([MCQ, NUM, MCQ, MCQ], ["A", "18", "B", ""], tasks=tasks)
    assert CountingMCQ.calls == 1  # the empty completion never reaches the grader
    assert grades == [Grade("A", True), Grade("18", True), Grade("B", False), Grade(None, False)]
    assert set(tasks) == {"mcq", "numeric"}  # the caller's dict caches the default numeric task


def test_validation():
    with pytest.raises(ValueError, match="partial_credit"):
        OutcomeReward(partial_credit=1.0)
    with pytest.raises(ValueError, match="2 completions for 1 samples"):
        OutcomeReward()([NUM], ["a", "b"])
