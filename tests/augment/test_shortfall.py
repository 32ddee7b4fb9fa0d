"""What the augment stage reports when rewrites are lost to validation (the shortfall from ``expansion``), and which
augment identities the rewrite prompt enters."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from openrft.augment.stage import AugmentConfig, run_augment
from openrft.cli.augment import format_summary
from openrft.core.rundir import stable_hash
from openrft.data.loaders import load_bundled
from openrft.data.sample import Sample
from openrft.models.backends.base import Completion, Generator
from openrft.pipeline.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
APPLES = Sample(id="apples", task="gsm8k", question="Tom has 3 apples and buys 4 more. How many apples does he have?",
                answer="7", answer_type="numeric")
PEARS = Sample(id="pears", task="gsm8k", question="Ann has 5 pears and eats 2. How many pears are left?",
               answer="3", answer_type="numeric")


class TwoGoodVariants(Generator):
    """Every reply: two valid rewrites of the apples question and junk (lost numbers) for the pears question."""

    name = "scripted"
    model = "fake"

    def __init__(self) -> None:
        self.prompts: list = []

    def generate(self, prompts, params, progress=None):
        self.prompts += prompts
        return [[Completion("After buying 4 more apples, Tom, who had 3, has how many apples? <sep> Tom had 3 apples "
                            "and bought 4 additional ones. What is his total number of apples?"
                            if "Tom" in p[-1]["content"] else "How many pears are there? <sep> What is left?", 9)]
                for p in prompts]


def test_rewrites_lost_to_validation_are_reasked_then_reported_as_a_shortfall(tmp_path):
    generator = TwoGoodVariants()
    config = AugmentConfig(k=5, expansion=6, retries=1, backend="openai", model="fake", shuffle=False)
    result = run_augment([APPLES, PEARS], generator, config, tmp_path / "augment", show_progress=False)
    assert len(generator.prompts) == 4  # each question asked, then re-asked once for what was missing
    assert "into 3 different expressions" in generator.prompts[2][-1]["content"]  # the re-ask asks for the 3 missing
    stats = result.stats
    assert stats["samples_out"] == 4 and stats["variants_per_question"] == 1.0  # apples: 1 + 2; pears: only itself
    assert stats["short_questions"] == {"apples": 3, "pears": 5}
    assert stats["shortfall"] == 8 and stats["shortfall_per_question"] == 4.0 and stats["questions_short"] == 2
    manifest = json.loads((tmp_path / "augment" / "manifest.json").read_text())
    assert manifest["stats"]["short_questions"] == {"apples": 3, "pears": 5}
    assert "short of the expansion: 8 samples over 2 questions (4.0 per question" in \
        format_summary(stats, tmp_path / "augment")


def test_the_template_rewriter_reports_its_shortfall_too():
    samples = load_bundled("arithmetic", "train")[:20]
    stats = run_augment(samples, None, AugmentConfig(backend="template"), show_progress=False).stats
    assert stats["shortfall"] == 6 * len(samples) - stats["samples_out"]
    assert stats["questions_short"] == len(stats["short_questions"])


def test_the_prompt_enters_only_the_identities_of_llm_rewriters_in_joint_mode():
    small = load_recipe(RECIPES / "small" / "sft_rl_prm_da.yaml").stage_config("augment")
    assert small.backend == "template" and "prompt" not in small.identity()
    assert stable_hash(small.identity()) == "60e75b8dc47313ed"  # the CPU recipes' augment, as before prompts
    paper = load_recipe(RECIPES / "paper" / "sft_rl_prm_da.yaml").stage_config("augment")
    assert paper.prompt == "paper" and paper.identity()["prompt"] == "paper"
    strict = dataclasses.replace(paper, prompt="strict")  # the instruction the paper recipe used before
    assert "prompt" not in strict.identity() and stable_hash(strict.identity()) == "e311e62713fee86b"
    assert stable_hash(strict.rewrite_settings()) == "33e4290c6a122be9"  # its stored rewrites are reused
    assert "prompt" not in dataclasses.replace(paper, mode="single").identity()
