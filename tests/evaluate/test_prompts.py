"""Evaluation prompts are counted in the model's own tokens before anything is generated: one too long for the
context is skipped and named (or refused), never an error after the other items were generated."""

from __future__ import annotations

import logging

import pytest

from openrft.data import DataError, Sample
from openrft.evaluate.prompts import fit_prompts
from openrft.evaluate.runner import EvalConfig, evaluate
from openrft.tasks import task_for


def _samples() -> list[Sample]:
    long = " ".join(f"word{i}" for i in range(3000))  # about 9000 tokens: beyond the tiny model's 2048
    return [Sample(id="a", task="t", question="What is 2+2?", answer="4"),
            Sample(id="b", task="t", question=long, answer="4"),
            Sample(id="c", task="t", question="What is 3+3?", answer="6")]


def _prompts(samples, shots=()):
    return {s.id: task_for(s).messages(s, shots) for s in samples}


def test_prompts_beyond_the_context_are_skipped_and_named(tiny_generator, caplog):
    samples = _samples()
    with caplog.at_level(logging.WARNING, logger="openrft.data.lengths"):
        kept = fit_prompts(tiny_generator, samples, _prompts(samples))
    assert [s.id for s in kept] == ["a", "c"]
    assert "skipping 1 question(s) too long for the model's context" in caplog.text
    assert "context 2048)" in caplog.text and "b (" in caplog.text


def test_few_shot_examples_count_and_error_mode_refuses(tiny_generator):
    samples = _samples()
    order = [samples[0], samples[2], samples[1]]
    with pytest.raises(DataError, match=r"3 question\(s\) too long .*: a \(\d+ tokens, context 2048\)"):
        fit_prompts(tiny_generator, order, _prompts(order, [samples[1]]), "error")  # one long shot: all too long


def test_a_generator_that_cannot_count_keeps_every_sample():
    class Remote:
        def generate(self, prompts, params, progress=None):
            raise AssertionError("nothing is generated")

    samples = _samples()
    assert len(fit_prompts(Remote(), samples, _prompts(samples))) == 3


def test_evaluate_skips_the_long_prompt_before_generating(tiny_generator, tmp_path):
    """evaluate checks the prompts it builds (few-shot examples included) before the first generate call."""
    asked = []

    class Counting:
        def too_long(self, prompts):
            return tiny_generator.too_long(prompts)

        def generate(self, prompts, params, progress=None):
            asked.append(len(prompts))
            return tiny_generator.generate(prompts, params, progress)

    result = evaluate(Counting(), _samples(), EvalConfig(n=1, max_new_tokens=2), tmp_path, show_progress=False)
    assert [r["id"] for r in result.records] == ["a", "c"] and asked == [2]
    with pytest.raises(DataError, match="too long"):
        evaluate(Counting(), _samples(), EvalConfig(n=1, max_new_tokens=2), tmp_path / "x", show_progress=False,
                 long_questions="error")
    assert asked == [2]
