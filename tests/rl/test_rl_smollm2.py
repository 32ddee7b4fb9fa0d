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
