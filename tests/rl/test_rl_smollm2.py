"""`openrft rl` on the bundled SmolLM2-135M, CPU: PPO (gae) and GRPO run a few steps and change the adapter."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from openrft.cli.main import main

pytestmark = pytest.mark.slow

FORMAT_REWARD = '''
import re

def states_a_number(prompts, completions, **columns):
    """A format reward: 0.5 for a completion that ends with a number."""
    return [0.5 if re.search(r"\\d\\s*\\.?\\s*$", c.strip()) else 0.0 for c in completions]
'''


def _lora_b_norm(adapter_dir) -> float:
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)


@pytest.mark.parametrize("estimator", ["grpo", "gae"])
def test_rl_cli_on_smollm2_changes_the_adapter(estimator, tmp_path, capsys):
    torch.set_num_threads(1)
    fn = tmp_path / "fmt.py"
    fn.write_text(FORMAT_REWARD)
    out = tmp_path / "rl"
    argv = ["rl", "--data", "arithmetic", "--limit", "4", "--out", str(out), "--estimator", estimator,
            "--steps", "2", "--prompts-per-step", "2", "-n", "3", "--max-new-tokens", "24", "--lr", "1e-3",
            "--critic-lr", "1e-3", "--partial-credit", "0.1", "--reward-fn", f"{fn}:states_a_number",
            "--no-tensorboard", "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "rollout reward" in printed and "adapter:" in printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert _lora_b_norm(out / "adapter") > 0
    if estimator == "gae":
        assert (out / "critic" / "value_head.safetensors").exists()
        assert "critic/explained_variance" in rows[-1]
    # rerun: finished stage is skipped
    assert main(argv) == 0
    assert "already finished" in capsys.readouterr().out


def test_the_rollouts_states_match_a_forward_on_smollm2(tmp_path, monkeypatch):
    """On the bundled model, decoding with prepacked layers and a LoRA folded in, the rollout log-probs and a shared
    critic's values taken from the rollout's states are the policy forward's to float rounding."""
    from openrft.data.loaders import load_bundled
    from openrft.models.backends import hf
    from openrft.rewards.base import RewardSettings
    from openrft.rl.config import RLConfig
    from openrft.rl.trainer import RLTrainer

    torch.set_num_threads(1)
    monkeypatch.setattr(hf, "PREPACK_MIN_TOKENS", 0)  # pack even this small call, as the RL rows' calls are
    cfg = RLConfig(model="smollm2-135m", estimator="gae", critic="shared", steps=1, prompts_per_step=2, n_samples=3,
                   max_new_tokens=24, temperature=1.0, kl_coef=0.01, lora_rank=4, tensorboard=False,
                   reward=RewardSettings())
    trainer = RLTrainer(cfg, load_bundled("arithmetic", split="train")[:2], tmp_path / "rl", show_progress=False)
    with torch.no_grad():
        torch.manual_seed(0)
        for name, p in [*trainer.ac.model.named_parameters(), *trainer.ac.value_head.named_parameters()]:
            if p.requires_grad and ("lora_B" in name or "lora" not in name):
                p.normal_(0, 0.02)
    assert trainer.from_rollout and trainer.needs_old_logp  # the KL in the reward needs the rollout log-probs
    batch = trainer.rollout(0)[0]
    logp, _, values = trainer.ac.logprobs_and_values(batch)
    mask = batch.response_mask.bool()
    torch.testing.assert_close(batch.old_logp[mask], logp.float()[mask], rtol=0, atol=2e-4)
    torch.testing.assert_close(batch.values[mask], values[mask], rtol=0, atol=1e-4)
    assert values[mask].abs().mean() > 0.01  # a head that reads the states
