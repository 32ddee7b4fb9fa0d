"""Evaluation prompts are counted in the model's own tokens before anything is generated: one too long for the
context is skipped and named (or refused), never an error after the other items were generated."""

from __future__ import annotations

import logging

import pytest

from openrft.data import DataError, Sample
from openrft.evaluate.prompts import fit_prompts


def _samples() -> list[Sample]:
    long = " ".join(f"word{i}" for i in range(3000))  # about 9000 tokens: beyond the tiny model's 2048
    return [Sample(id="a", task="t", question="What is 2+2?", answer="4"),
            Sample(id="b", task="t", question=long, answer="4"),
            Sample(id="c", task="t", question="What is 3+3?", answer="6")]


def test_prompts_beyond_the_context_are_skipped_and_named(tiny_generator, caplog):
    with caplog.at_level(logging.WARNING, logger="openrft.data.lengths"):
        kept = fit_prompts(tiny_generator, _samples())
    assert [s.id for s in kept] == ["a", "c"]
    assert "skipping 1 question(s) too long for the model's context" in caplog.text
    assert "context 2048)" in caplog.text and "b (" in caplog.text


def test_few_shot_examples_count_and_error_mode_refuses(tiny_generator):
    samples = _samples()
    shots = [samples[1]]  # one long example makes every prompt too long
    with pytest.raises(DataError, match=r"3 question\(s\) too long .*: a \(\d+ tokens, context 2048\)"):
        fit_prompts(tiny_generator, [samples[0], samples[2], samples[1]], lambda s: shots, "error")


def test_a_generator_that_cannot_count_keeps_every_sample():
    class Remote:
        def generate(self, prompts, params, progress=None):
            raise AssertionError("nothing is generated")

    assert len(fit_prompts(Remote(), _samples())) == 3
