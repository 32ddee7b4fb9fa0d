"""One of each stage on the bundled model on CUDA (bf16 where the stage picks it): generation, a synthesis round,
an SFT epoch, an RL step (grpo, gae and gae with the shared critic), PRM scoring and evaluation. Marked ``gpu``:
skipped without CUDA.

``OPENRFT_GPU_TESTS_ON_CPU=1`` runs them on the CPU instead, to check the tests themselves on a machine without a
GPU (``bench/gpu_check.sh`` runs them on CUDA). Each stays small: the whole file is a few minutes on one GPU.
"""

from __future__ import annotations

import pytest
import torch

from openrft.data.loaders import load_bundled
from openrft.models.backends.base import SamplingParams

pytestmark = pytest.mark.gpu
MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def questions():
    return load_bundled("arithmetic", "train")[:2]


@pytest.fixture(scope="module")
def generator(device):
    from openrft.models.backends.hf import TransformersGenerator

    gen = TransformersGenerator.from_pretrained(MODEL, dtype="auto", device=device, batch_size=8)
    yield gen
    gen.close()


def test_generation_samples_and_reproduces_on_the_device(generator, device):
    assert generator.device.type == device
    params = SamplingParams(n=2, temperature=0.7, max_new_tokens=16, seed=3)
    prompts = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Name a colour."}]]
    first, again = generator.generate(prompts, params), generator.generate(prompts, params)
    assert [[c.text for c in row] for row in first] == [[c.text for c in row] for row in again]
    assert all(c.num_tokens > 0 for row in first for c in row)
    greedy = generator.generate(prompts[:1], SamplingParams(n=1, temperature=0.0, max_new_tokens=8))
    assert greedy[0][0].num_tokens > 0


def test_one_synthesis_round(generator, questions, tmp_path):
    from openrft.synthesize.stage import SynthesizeConfig, run_synthesize

    result = run_synthesize(questions, generator, SynthesizeConfig(model=MODEL, budget=2, rounds=(2,),
                                                                   max_new_tokens=32),
                            tmp_path / "synthesize", show_progress=False)
    assert len(result.records) == 2 and (tmp_path / "synthesize" / "traces.jsonl").is_file()


def test_one_sft_epoch(questions, tmp_path):
    from openrft.sft.stage import SFTStageConfig, run_sft
    from openrft.synthesize.stage import SynthesizeConfig, run_synthesize

    run_synthesize(questions, None, SynthesizeConfig(source="gold"), tmp_path / "gold", show_progress=False)
    result = run_sft(tmp_path / "gold", tmp_path / "sft", SFTStageConfig(model=MODEL, epochs=1, batch_size=2,
                                                                       max_length=256), show_progress=False)
    assert (result.weights_dir / "adapter_config.json").is_file() and result.steps >= 1


@pytest.mark.parametrize("estimator", ["grpo", "gae", "gae-shared"])
def test_one_rl_step(questions, tmp_path, estimator):
    from openrft.rl.config import RLConfig
    from openrft.rl.stage import run_rl

    name, _, critic = estimator.partition("-")
    config = RLConfig(model=MODEL, steps=1, prompts_per_step=2, n_samples=2, max_new_tokens=16, micro_batch_size=2,
                      estimator=name, critic=critic or "adapter", tensorboard=False)
    result = run_rl(config, tmp_path / f"rl-{estimator}", questions, show_progress=False)
    assert len(result.metrics) == 1 and result.metrics[0]["reward"] == result.metrics[0]["reward"]  # not NaN


def test_prm_scoring_with_a_value_head_on_the_bundled_backbone(device):
    from openrft.models.loading import load_model
    from openrft.rewards.prm.value_head import ValueHeadModel, ValueHeadPRM

    backbone, tokenizer = load_model(MODEL, dtype="auto", device=device)
    prm = ValueHeadPRM(ValueHeadModel(backbone, base_model=MODEL).to(device), tokenizer)
    scores = prm.score_batch(["What is 2 + 3?"], [["2 + 3 = 5", "The answer is 5."]])
    assert len(scores[0]) == 2 and all(0.0 <= x <= 1.0 for x in scores[0])


def test_evaluation(generator, questions, tmp_path):
    from openrft.evaluate.runner import EvalConfig, evaluate

    result = evaluate(generator, questions, EvalConfig(n=2, max_new_tokens=16), tmp_path / "eval",
                      show_progress=False)
    assert 0.0 <= result.average <= 1.0 and result.tasks[0].items == 2
