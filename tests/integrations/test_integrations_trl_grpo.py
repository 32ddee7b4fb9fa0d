"""openrft's rewards inside a real trl GRPOTrainer step on the bundled model (fp32 CPU, LoRA, one step)."""

from __future__ import annotations

import pytest
import torch

from openrft.data.loaders import load_bundled, load_sources
from openrft.integrations.trl import composite_reward, outcome_reward, trl_dataset, trl_rows
from openrft.rewards.base import RewardSettings
from openrft.tasks import task_for


@pytest.fixture(scope="module")
def tiny_prm_dir(tmp_path_factory, tiny_model_dir):
    """A value-head PRM on the tiny random Llama (SmolLM2's tokenizer): untrained scores, real PRM code."""
    from openrft.models.loading import load_model
    from openrft.rewards.prm.value_head import ValueHeadModel, ValueHeadPRM

    backbone, tok = load_model(str(tiny_model_dir))
    torch.manual_seed(1)
    return ValueHeadPRM(ValueHeadModel(backbone, base_model=str(tiny_model_dir)), tok).save_pretrained(
        tmp_path_factory.mktemp("prm") / "prm")


@pytest.fixture
def policy():
    """A copy of the bundled model of its own (fp32, CPU): the trainer puts LoRA layers into it, so it is not the
    session-wide ``smollm2``."""
    from openrft.models.loading import load_model

    return load_model("smollm2-135m")


def _grpo_step(model, tokenizer, dataset, reward_funcs, out_dir):
    """One GRPO step: 2 prompts x 2 completions of at most 16 tokens, rank-4 LoRA, no trackers."""
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(out_dir), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=16, max_steps=1, learning_rate=1e-5, logging_steps=1, report_to=[],
                      use_cpu=True, bf16=False, save_strategy="no", seed=0, shuffle_dataset=False,
                      disable_tqdm=True, dataloader_num_workers=0, activation_checkpointing=False)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora)
    trainer.train()
    return trainer


@pytest.mark.slow
def test_grpo_trainer_logs_the_rewards_openrft_gives(policy, tiny_prm_dir, tmp_path):
    torch.set_num_threads(1)
    samples = [load_bundled("gsm8k", "train")[0], load_sources(["sciknoweval/chemical_calculation"], split="train")[0]]
    rows = trl_rows(samples)
    outcome = outcome_reward()
    with_prm = composite_reward(RewardSettings(prm=str(tiny_prm_dir), alpha=0.7), name="openrft_prm")
    model, tokenizer = policy
    trainer = _grpo_step(model, tokenizer, trl_dataset(samples), [outcome, with_prm], tmp_path / "grpo")

    # what trl recorded: each completion, its prompt, and the reward each function gave it
    prompts, completions = list(trainer._logs["prompt"]), list(trainer._logs["completion"])
    assert len(completions) == 4 and all(isinstance(c, list) and c[0]["role"] == "assistant" for c in completions)
    by_prompt = [next(r for r in rows if r["prompt"] == p) for p in prompts]
    columns = {k: [r[k] for r in by_prompt] for k in rows[0] if k != "prompt"}
    logged = trainer.state.log_history[0]
    for fn in (outcome, with_prm):
        ours = fn(prompts, completions, **columns)  # the same completions graded again, outside trl
        assert list(trainer._logs["rewards"][fn.__name__]) == pytest.approx(ours, abs=1e-5)
        assert logged[f"rewards/{fn.__name__}/mean"] == pytest.approx(sum(ours) / 4, abs=1e-5)
    assert {"openrft_outcome/correct", "openrft_outcome/has_answer", "openrft_prm/process",
            "openrft_prm/n_steps"} <= set(logged)

    # the same functions on right and wrong answers to these bundled questions
    right = [task_for(s).render_answer(s) for s in samples]
    wrong = ["The answer is \\boxed{49}.", "The answer is \\boxed{D}."]
    for texts, score in ((right, 1.0), (wrong, 0.0)):
        chat = [[{"role": "assistant", "content": t}] for t in texts]
        assert outcome([r["prompt"] for r in rows], chat, **{k: [r[k] for r in rows] for k in columns}) == [score] * 2
    with_prm.close()
