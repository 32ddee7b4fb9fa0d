"""The RL loop end to end on a tiny random Llama (fast) — the estimators, the critic, checkpoints and resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from openrft.data.loaders import load_bundled
from openrft.rewards.base import CompositeReward, RewardSettings
from openrft.rl.config import RLConfig
from openrft.rl.logs import read_metrics
from openrft.rl.stage import run_rl
from openrft.rl.trainer import RLTrainer

REWARD_FILE = '''
def vowel_reward(prompts, completions, **columns):
    """The share of vowels: a learnable signal for a random model that differs between any two samples
    (a length reward does not, once every sample runs to max_new_tokens)."""
    return [sum(ch in "aeiouAEIOU" for ch in c) / max(len(c), 1) for c in completions]
'''


VOWEL_REWARD = {}
exec(REWARD_FILE, VOWEL_REWARD)  # the same function in-process, for the reward that kills a run
VOWEL_REWARD = VOWEL_REWARD["vowel_reward"]


@pytest.fixture(scope="module")
def samples():
    return load_bundled("svamp", "test")[:6]


@pytest.fixture()
def vowel_fn(tmp_path):
    path = tmp_path / "rewards.py"
    path.write_text(REWARD_FILE)
    return f"{path}:vowel_reward"


def _config(tiny_model_dir, fn, **kw):
    base = dict(model=str(tiny_model_dir), steps=2, prompts_per_step=2, n_samples=4, max_new_tokens=8,
                micro_batch_size=4, temperature=1.0, lr=1e-2, critic_lr=1e-2, lora_rank=2, tensorboard=False,
                reward=RewardSettings(functions=[fn]), seed=0)
    base.update(kw)
    return RLConfig(**base)


def _lora_b_norm(adapter_dir) -> float:
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(v.abs().sum()) for k, v in weights.items() if "lora_B" in k)


def count_forward_rows(monkeypatch) -> list[int]:
    """A list that gets the number of rows of every policy/critic backbone forward from now on."""
    from openrft.rl import policy

    rows_run: list[int] = []
    real = policy.hidden_states

    def counted(model, input_ids, *args, **kwargs):
        rows_run.append(input_ids.shape[0])
        return real(model, input_ids, *args, **kwargs)

    monkeypatch.setattr(policy, "hidden_states", counted)
    return rows_run


@pytest.mark.parametrize("estimator", ["grpo", "rloo", "reinforce_pp"])
def test_critic_free_estimators_train_the_adapter(tiny_model_dir, samples, vowel_fn, tmp_path, estimator):
    torch.set_num_threads(1)
    cfg = _config(tiny_model_dir, vowel_fn, estimator=estimator)
    result = run_rl(cfg, tmp_path / "rl", samples, show_progress=False)
    assert not result.skipped and len(result.metrics) == 2
    row = result.metrics[-1]
    for key in ("reward", "accuracy", "kl", "entropy", "policy/clipfrac", "policy/loss", "response_length",
                "tokens_per_s", "time/generation", "time/scoring", "time/update", "reward/fn/vowel_reward/mean"):
        assert key in row, key
        assert math.isfinite(row[key]), key
    # LoRA B starts at zero: any update shows in it
    assert _lora_b_norm(result.adapter_dir) > 0
    manifest = json.loads((tmp_path / "rl" / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["stats"]["steps"] == 2


def test_gae_trains_policy_and_critic_with_ppo_epochs(tiny_model_dir, samples, vowel_fn, tmp_path):
    torch.set_num_threads(1)
    cfg = _config(tiny_model_dir, vowel_fn, estimator="gae", n_samples=2, ppo_epochs=2, minibatch_size=2,
                  micro_batch_size=1)
    result = run_rl(cfg, tmp_path / "rl", samples, show_progress=False)
    # the critic starts at 0 (zero-initialised value head), so step 1's values are 0 and its value loss is
    # half the mean squared return, whatever the backbone's hidden states
    first = result.metrics[0]
    assert first["critic/values_mean"] == 0.0
    row = result.metrics[-1]
    for key in ("critic/loss", "critic/vf_clipfrac", "critic/explained_variance", "kl", "policy/approx_kl"):
        assert key in row and math.isfinite(row[key]), key
    # several minibatches x epochs: the later updates see a changed policy, so ratios move away from 1
    assert row["policy/approx_kl"] > 0
    assert _lora_b_norm(result.adapter_dir) > 0
    head = load_file(str(tmp_path / "rl" / "critic" / "value_head.safetensors"))
    assert any(k.startswith("v_head.") for k in head) and any(k.startswith("adapter.") for k in head)


def test_equal_rewards_give_zero_advantage_without_nan(tiny_model_dir, samples, tmp_path):
    torch.set_num_threads(1)
    # a random model never answers SVAMP right: every group is all-zero
    cfg = _config(tiny_model_dir, "x:y", steps=1, reward=RewardSettings())
    result = run_rl(cfg, tmp_path / "rl", samples, show_progress=False)
    row = result.metrics[0]
    assert row["reward"] == 0.0 and row["adv/zero_std_groups"] == 2
    assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    assert _lora_b_norm(result.adapter_dir) == 0  # nothing to learn from


class _Killer:
    """A reward function that stops the run at its ``at``-th call (like a kill mid-training)."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0
        self.__name__ = "vowel_reward"

    def __call__(self, prompts, completions, **columns):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return VOWEL_REWARD(prompts, completions, **columns)


def test_kill_then_rerun_resumes_from_last_checkpoint_and_rerun_skips(tiny_model_dir, samples, vowel_fn, tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "rl"
    cfg = _config(tiny_model_dir, vowel_fn, steps=3, save_every=1)
    killer = CompositeReward(cfg.reward, functions=[_Killer(at=3)])
    with pytest.raises(KeyboardInterrupt):
        run_rl(cfg, out, samples, reward=killer, show_progress=False)
    assert [m["step"] for m in read_metrics(out)] == [1, 2]
    assert (out / "checkpoints" / "step-000002" / "state.json").exists()
    result = run_rl(cfg, out, samples, show_progress=False)
    assert result.resumed_from == 2
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]
    again = run_rl(cfg, out, samples, show_progress=False)
    assert again.skipped


def test_resumed_run_matches_uninterrupted_run(tiny_model_dir, samples, vowel_fn, tmp_path):
    """Same seeds, same prompts per step, restored optimizer: the resumed adapter equals the straight one."""
    torch.set_num_threads(1)
    cfg = _config(tiny_model_dir, vowel_fn, steps=2, save_every=1)
    straight = run_rl(cfg, tmp_path / "a", samples, show_progress=False)
    killer = CompositeReward(cfg.reward, functions=[_Killer(at=2)])
    with pytest.raises(KeyboardInterrupt):
        run_rl(cfg, tmp_path / "b", samples, reward=killer, show_progress=False)
    resumed = run_rl(cfg, tmp_path / "b", samples, show_progress=False)
    a = load_file(str(straight.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_rl_from_sft_adapter_saves_a_stacked_adapter_eval_can_load(tiny_model_dir, samples, vowel_fn, tmp_path):
    from openrft.models.loading import load_model
    from openrft.models.lora import LoraSettings, attach_lora, load_adapter

    torch.set_num_threads(1)
    model, tok = load_model(str(tiny_model_dir))
    sft = attach_lora(model, LoraSettings(rank=2))
    with torch.no_grad():
        for n, p in sft.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    sft.save_pretrained(tmp_path / "sft" / "adapter")
    cfg = _config(tiny_model_dir, vowel_fn, steps=1, adapter=str(tmp_path / "sft"))
    trainer = RLTrainer(cfg, samples, tmp_path / "rl", show_progress=False)
    result = trainer.train()
    assert (result.adapter_dir / "openrft_adapter.json").exists()
    batch = trainer.rollout(0)[0]
    with torch.no_grad():
        want = trainer.ac.logprobs(batch)[0]
    base, _ = load_model(str(tiny_model_dir))
    loaded = load_adapter(base, result.adapter_dir)
    from openrft.rl.policy import ActorCritic

    probe = ActorCritic.__new__(ActorCritic)
    probe.model, probe.temperature = loaded, cfg.temperature
    with torch.no_grad():
        got = probe.logprobs(batch)[0]
    torch.testing.assert_close(got * batch.response_mask, want * batch.response_mask, rtol=1e-4, atol=1e-4)
    # the reference is the SFT model: the base without any adapter gives other log-probs
    plain = ActorCritic.__new__(ActorCritic)
    plain.model, plain.temperature = load_model(str(tiny_model_dir))[0], cfg.temperature
    with torch.no_grad():
        assert not torch.allclose(plain.logprobs(batch)[0] * batch.response_mask, want * batch.response_mask)


def test_prompt_longer_than_context_is_named(tiny_model_dir, samples, vowel_fn, tmp_path):
    long = samples[0].replace(question="word " * 3000)
    cfg = _config(tiny_model_dir, vowel_fn, steps=1)
    with pytest.raises(ValueError, match=rf"sample {long.id}: its prompt has \d+ tokens"):
        RLTrainer(cfg, [long, *samples[1:]], tmp_path / "rl", show_progress=False)


def test_config_errors_are_named():
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
        RLConfig(estimator="ppo")
    assert RLConfig(estimator="openrft.rl.advantages:rloo").estimator == "openrft.rl.advantages:rloo"  # a plug-in
    with pytest.raises(ValueError, match="loss_agg must be one of"):
        RLConfig(loss_agg="token-sum")
    with pytest.raises(ValueError, match="gamma must be in"):
        RLConfig(advantage={"gamma": 5})
    with pytest.raises(ValueError, match="step_credit must be"):
        RLConfig(advantage={"step_credit": "global"})
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        RLConfig(estimator="grpo", n_samples=1)
    with pytest.raises(ValueError, match="did you mean kl_coef"):
        RLConfig.from_dict({"kl_coeff": 0.1})


@pytest.mark.slow
def test_two_processes_under_torchrun_share_the_step(tiny_model_dir, tmp_path):
    """Two CPU processes (gloo): each rolls out half the prompts, gradients are averaged, rank 0 writes."""
    import os
    import subprocess
    import sys

    out = tmp_path / "rl"
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "openrft.cli.main", "rl",
           "--data", "svamp", "--split", "test", "--limit", "8", "--model", str(tiny_model_dir), "--out", str(out),
           "--steps", "2", "--prompts-per-step", "2", "-n", "2", "--max-new-tokens", "6", "--no-tensorboard",
           "--quiet", "--estimator", "gae", "--entropy-coef", "0.01"]
    # a tiny random model earns reward 0 everywhere and the critic starts at 0, so every advantage is 0: the
    # entropy bonus gives both ranks a gradient to average
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [m["step"] for m in read_metrics(out)] == [1, 2]
    assert _lora_b_norm(out / "adapter") > 0


@pytest.mark.parametrize("dense", [False, True])
def test_process_rewards_from_a_value_head_prm(tiny_model_dir, samples, tmp_path, dense):
    """RL with alpha*outcome + (1-alpha)*f(step scores) from a PRM checkpoint, and its dense form."""
    from openrft.models.loading import load_model
    from openrft.rewards.prm.value_head import ValueHeadModel, ValueHeadPRM

    torch.set_num_threads(1)
    backbone, tok = load_model(str(tiny_model_dir))
    torch.manual_seed(1)
    prm_dir = ValueHeadPRM(ValueHeadModel(backbone, base_model=str(tiny_model_dir)), tok).save_pretrained(tmp_path / "prm")
    reward = RewardSettings(prm=str(prm_dir), alpha=0.7, agg="min", dense=dense, step_rule="re:[ .,]")
    cfg = _config(tiny_model_dir, "x:y", reward=reward, steps=1, max_new_tokens=12)
    result = run_rl(cfg, tmp_path / "rl", samples, show_progress=False)
    row = result.metrics[0]
    assert 0 < row["reward/process/mean"] < 1 and row["reward/n_steps/mean"] > 0
    # every answer is wrong: each group's outcome is the same, so only the process term varies within a group
    assert row["reward/groups/same_outcome"] == 1.0 and row["reward/outcome/group_std"] == 0.0
    if dense:  # the process part sits at the step ends, the scalar reward is alpha * outcome (0 here)
        assert row["reward"] == 0.0
        assert row["reward/reward/group_std"] == 0.0 and "reward/process/group_std" not in row
    else:
        assert row["reward"] == pytest.approx(0.3 * row["reward/process/mean"], rel=1e-5)
        assert row["reward/reward/group_std"] == pytest.approx(row["reward/process/group_std"], rel=1e-5)
        assert row["reward/process/group_std"] > 0
    assert _lora_b_norm(result.adapter_dir) > 0  # step scores differ between completions: something to learn


def test_rollouts_sample_from_the_merged_policy_and_restore_the_exact_base(tiny_model_dir):
    """merged_policy folds the adapter in for generation (same greedy text as the unmerged adapter) and puts the
    base weights back bit for bit, so no drift builds up over steps."""
    from openrft.models.backends.base import SamplingParams
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.models.loading import load_model
    from openrft.models.lora import LoraSettings
    from openrft.rl.policy import ActorCritic

    torch.manual_seed(0)
    model, tok = load_model(str(tiny_model_dir))
    ac = ActorCritic(model, tok, LoraSettings(4, 8, 0.0, "all-linear"), critic="adapter")
    for name, p in ac.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # a non-trivial adapter
    before = {n: p.detach().clone() for n, p in ac.model.named_parameters()}
    gen = TransformersGenerator(ac.model, tok, batch_size=4)
    prompts = [[{"role": "user", "content": f"{i} + {i}?"}] for i in range(4)]
    params = SamplingParams(temperature=0, max_new_tokens=8)
    plain = gen.generate(prompts, params)
    with ac.merged_policy():
        assert all(m.merged for m in ac.model.modules() if hasattr(m, "merged_adapters") and m.lora_A)
        merged = gen.generate(prompts, params)
    assert [c[0].text for c in merged] == [c[0].text for c in plain]
    after = dict(ac.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert not any(m.merged_adapters for m in ac.model.modules() if hasattr(m, "merged_adapters"))


def test_a_fully_fine_tuned_model_is_known_by_its_bytes_not_its_path(tiny_model_dir, samples, vowel_fn, tmp_path):
    """After a full-weight SFT the RL stage's model is a local directory: new bytes behind the same path rerun RL,
    and the same bytes under another path (another run directory's copy) match."""
    import json
    import shutil

    torch.set_num_threads(1)
    model = tmp_path / "sft-full"
    shutil.copytree(tiny_model_dir, model)
    first = run_rl(_config(model, vowel_fn, steps=1), tmp_path / "rl", samples, show_progress=False)
    manifest = json.loads((tmp_path / "rl" / "manifest.json").read_text())
    assert manifest["config"]["model"] == "local" and manifest["inputs"]["model"]
    # options added later keep their old behaviour by default and stay out of the identity then
    assert "policy_loss" not in manifest["config"] and "score_answer_step" not in manifest["config"]["reward"]
    assert manifest["stats"]["model_path"] == str(model)
    # the same bytes elsewhere: a copy of the model and of the finished stage match
    shutil.copytree(model, tmp_path / "elsewhere")
    shutil.copytree(tmp_path / "rl", tmp_path / "rl-copy")
    assert run_rl(_config(tmp_path / "elsewhere", vowel_fn, steps=1), tmp_path / "rl-copy", samples,
                  show_progress=False).skipped
    # new bytes behind the same path: RL trains again
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"openrft_note": "retrained"}))
    again = run_rl(_config(model, vowel_fn, steps=1), tmp_path / "rl", samples, show_progress=False)
    assert not first.skipped and not again.skipped


def test_pin_local_inputs_hashes_local_paths_and_leaves_names():
    from openrft.core.rundir import pin_local_inputs

    settings = {"model": "smollm2-135m", "adapter": __file__, "reward": {"prm": "judge:smollm2-135m", "alpha": 1}}
    inputs: dict[str, str] = {}
    shown = pin_local_inputs(settings, inputs, {"model": "smollm2-135m", "adapter": __file__,
                                                "reward.prm": "judge:smollm2-135m"})
    assert settings == {"model": "smollm2-135m", "adapter": "local",
                        "reward": {"prm": "judge:smollm2-135m", "alpha": 1}}
    assert list(inputs) == ["adapter"] and len(inputs["adapter"]) == 16 and shown == {"adapter_path": __file__}


def test_kl_and_value_losses_get_the_policy_losss_fixed_length(tiny_model_dir, samples, vowel_fn, tmp_path,
                                                                monkeypatch):
    """Under seq-mean-token-sum-norm (Dr.GRPO) every loss term divides by max_new_tokens, not by the padding width
    of its micro-batch."""
    import openrft.rl.trainer as trainer_module

    seen = {}
    for name in ("kl_loss", "value_loss"):
        real = getattr(trainer_module, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen[_name] = kwargs.get("max_len")
            return _real(*args, **kwargs)

        monkeypatch.setattr(trainer_module, name, spy)
    torch.set_num_threads(1)
    cfg = _config(tiny_model_dir, vowel_fn, steps=1, estimator="gae", kl_in="loss", kl_coef=0.1,
                  loss_agg="seq-mean-token-sum-norm")
    run_rl(cfg, tmp_path / "rl", samples, show_progress=False)
    assert seen == {"kl_loss": cfg.max_new_tokens, "value_loss": cfg.max_new_tokens}


def test_shared_prompt_forward_matches_the_full_forward_and_its_gradients(tiny_model_dir, monkeypatch):
    """Each distinct prompt of a micro-batch runs once and its KV cache is expanded to the rows: log-probs,
    values and the LoRA gradients equal those of the full per-row forward (ragged prompts and responses)."""
    from openrft.models.loading import load_model
    from openrft.models.lora import LoraSettings
    from openrft.rl.policy import ActorCritic
    from openrft.rl.rollout import build_batch

    torch.manual_seed(0)
    model, tok = load_model(str(tiny_model_dir))
    ac = ActorCritic(model, tok, LoraSettings(4, 8, 0.0, "all-linear"), critic="adapter")
    for name, p in ac.model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.2)
    prompts = [[5, 6, 7, 8, 9], [11, 12]]  # two groups of three, prompts of different lengths
    responses = [[1, 2, 3], [4], [5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15], [16]]
    batch = build_batch([prompts[i // 3] for i in range(6)], responses, [i // 3 for i in range(6)], [0.0] * 6,
                        pad_id=tok.pad_token_id)
    rows_run = count_forward_rows(monkeypatch)

    def run():
        rows_run.clear()
        ac.model.zero_grad(set_to_none=True)
        ac.value_head.zero_grad(set_to_none=True)
        logp, _ = ac.logprobs(batch)
        values = ac.values(batch)
        ((logp * batch.response_mask).sum() + (values * batch.response_mask).sum()).backward()
        grads = {n: p.grad.clone() for n, p in ac.model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            ref, _ = ac.logprobs(batch, reference=True)
        return logp.detach(), values.detach(), ref, grads, list(rows_run)

    shared = run()
    assert shared[4] == [2, 6] * 3  # policy, critic, reference: 2 distinct prompts, then the 6 responses
    ac.share_prompts = False
    full = run()
    assert full[4] == [6] * 3
    mask = batch.response_mask.bool()
    for a, b in zip(shared[:3], full[:3]):
        torch.testing.assert_close(a[mask], b[mask], rtol=1e-4, atol=1e-5)
    assert shared[3].keys() == full[3].keys() and shared[3]
    for name in full[3]:
        torch.testing.assert_close(shared[3][name], full[3][name], rtol=1e-3, atol=1e-5)


def test_a_shared_critic_reads_the_policys_hidden_states_and_trains_it_through_vf_coef(
        tiny_model_dir, samples, vowel_fn, tmp_path):
    """critic: shared (ReFT's value head on the policy): one forward gives the log-probs and values that the
    separate calls give; the value loss reaches the policy's adapter scaled by vf_coef; during critic warm-up
    only the value head learns; the checkpoint holds the head alone and a killed run resumes from it."""
    torch.set_num_threads(1)
    cfg = _config(tiny_model_dir, vowel_fn, estimator="gae", critic="shared", critic_warmup_steps=1, steps=3,
                  save_every=1)
    trainer = RLTrainer(cfg, samples, tmp_path / "probe", show_progress=False)
    batch = trainer.rollout(0)[0]
    logp, _, values = trainer.ac.logprobs_and_values(batch)
    torch.testing.assert_close(logp, trainer.ac.logprobs(batch)[0])
    torch.testing.assert_close(values, trainer.ac.values(batch))
    assert trainer.from_rollout and batch.values is not None  # the rollout gave them (all 0: a zero head)
    # zero advantages: the policy loss has no gradient, so the adapter's gradient is vf_coef x the value loss's
    # (a zero-initialised head or LoRA B passes no gradient to the backbone: give them values first)
    with torch.no_grad():
        for name, p in [*trainer.ac.model.named_parameters(), *trainer.ac.value_head.named_parameters()]:
            if "lora_B" in name or "lora" not in name:
                if p.requires_grad:
                    p.normal_(0, 0.2)
    trainer.score_pass(batch, need_old=True)
    batch.advantages = torch.zeros_like(batch.response_mask, dtype=torch.float32)
    batch.returns = batch.response_mask.float()
    grads = {}
    for coef in (1.0, 2.0):
        trainer.config.vf_coef = coef
        trainer.ac.model.zero_grad(set_to_none=True)
        trainer.backward_micro_batch(batch, 1.0, train_policy=True)
        grads[coef] = {n: p.grad.clone() for n, p in trainer.ac.model.named_parameters() if p.grad is not None}
    assert sum(float(g.abs().sum()) for g in grads[1.0].values()) > 0
    for name, g in grads[1.0].items():
        torch.testing.assert_close(grads[2.0][name], 2 * g, rtol=1e-4, atol=1e-7)
    trainer.ac.model.zero_grad(set_to_none=True)
    trainer.backward_micro_batch(batch, 1.0, train_policy=False)  # critic warm-up: no gradient into the backbone
    assert all(p.grad is None for p in trainer.ac.model.parameters())
    assert all(p.grad is not None for p in trainer.ac.value_head.parameters())

    out = tmp_path / "rl"
    killer = CompositeReward(cfg.reward, functions=[_Killer(at=3)])
    with pytest.raises(KeyboardInterrupt):
        run_rl(cfg, out, samples, reward=killer, show_progress=False)
    result = run_rl(cfg, out, samples, show_progress=False)
    assert result.resumed_from == 2 and len(read_metrics(out)) == 3
    assert all(math.isfinite(m["critic/loss"]) for m in read_metrics(out))
    head = load_file(str(out / "critic" / "value_head.safetensors"))
    assert head and all(k.startswith("v_head.") for k in head)


@pytest.mark.parametrize("critic,ppo_epochs", [("shared", 1), ("shared", 2), ("adapter", 2)])
def test_the_rollouts_states_give_the_values_and_log_probs_a_forward_gives(
        tiny_model_dir, samples, vowel_fn, monkeypatch, tmp_path, critic, ppo_epochs):
    """rollout_states (on by default): the states the rollout sampled from give the rollout log-probs (when the
    update needs them: here ppo_epochs 2) and a shared critic's values as a forward over the rollout gives them,
    from the policy with its adapter (folded in while sampling); the score pass then runs no policy forward for
    them (a critic adapter's values still need its own); off, it does."""
    torch.set_num_threads(1)
    rows_run = count_forward_rows(monkeypatch)
    trainers = {}
    for on in (True, False):
        cfg = _config(tiny_model_dir, vowel_fn, estimator="gae", critic=critic, rollout_states=on, kl_coef=0.0,
                      ppo_epochs=ppo_epochs, temperature=0.8)
        trainer = trainers[on] = RLTrainer(cfg, samples, tmp_path / f"rl-{on}", show_progress=False)
        with torch.no_grad():  # a policy away from its base and a head that reads it
            for name, p in [*trainer.ac.model.named_parameters(), *trainer.ac.value_head.named_parameters()]:
                if p.requires_grad and ("lora_B" in name or "lora" not in name):
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * 0.2)
    assert trainers[True].from_rollout and not trainers[False].from_rollout
    batches, forwards = {}, {}
    for on, trainer in trainers.items():
        batch = trainer.rollout(0)[0]
        assert (batch.values is not None) == (on and critic == "shared")
        assert (batch.old_logp is not None) == (on and ppo_epochs > 1)
        rows_run.clear()
        trainer.score_pass(batch, need_old=trainer.needs_old_logp)
        forwards[on] = list(rows_run)
        batches[on] = batch
    # a forward over the batch: 2 micro-batches of one prompt's 4 rows, each the prompt once then its 4 rows
    policy = int(ppo_epochs > 1 or critic == "shared")  # log-probs, and a shared critic's values with them
    adapter = int(critic == "adapter")
    assert forwards[False] == [1, 4, 1, 4] * (policy + adapter)  # off: the policy's and a critic adapter's
    assert forwards[True] == [1, 4, 1, 4] * adapter  # on: only a critic adapter's own forward
    on, off = batches[True], batches[False]
    assert torch.equal(on.response_ids, off.response_ids)  # the same rollout (same seeds)
    mask = on.response_mask.bool()
    if critic == "shared":
        assert on.values[mask].abs().min() > 0
    for name in ("values", "old_logp"):
        if getattr(off, name) is not None:
            assert torch.equal(getattr(on, name)[~mask], torch.zeros_like(getattr(on, name)[~mask]))
            torch.testing.assert_close(getattr(on, name), getattr(off, name), rtol=1e-4, atol=1e-4)
    single = RLTrainer(_config(tiny_model_dir, vowel_fn, estimator="gae", critic="adapter", kl_coef=0.0), samples,
                       tmp_path / "rl-single", show_progress=False)
    assert not single.needs_old_logp and not single.from_rollout  # nothing a forward would give is needed


def test_rows_with_zero_advantages_are_left_out_of_the_update_with_the_same_result(
        tiny_model_dir, samples, vowel_fn, monkeypatch, tmp_path):
    """skip_zero_advantage: a group whose advantages are all zero runs no forward or backward, and the update
    (gradients, clipping, AdamW's moments and weight decay) equals the one that runs every row, also when every
    row is left out; anything else that reads the rows (KL in the loss, an entropy bonus, a critic) turns it off."""
    torch.set_num_threads(1)
    rows_run = count_forward_rows(monkeypatch)

    def two_updates(skip: bool):
        cfg = _config(tiny_model_dir, vowel_fn, kl_coef=0.0, weight_decay=0.1, micro_batch_size=2,
                      skip_zero_advantage=skip)
        trainer = RLTrainer(cfg, samples, tmp_path / f"rl-{skip}", show_progress=False)
        batch = trainer.rollout(0)[0]
        adv = torch.linspace(-1, 1, batch.response_width).expand(len(batch), -1).clone()
        adv[:4] = 0.0  # the first group scored alike
        batch.advantages = adv * batch.response_mask
        rows_run.clear()
        first = trainer.update(batch, train_policy=True)
        counts = list(rows_run)
        after_first = {n: p.detach().clone() for n, p in trainer.ac.model.named_parameters() if p.requires_grad}
        batch.advantages = torch.zeros_like(batch.advantages)  # every row alike: the step still moves (AdamW)
        rows_run.clear()
        second = trainer.update(batch, train_policy=True)
        params = {n: p.detach().clone() for n, p in trainer.ac.model.named_parameters() if p.requires_grad}
        return trainer, first, second, counts, list(rows_run), params, after_first

    fast = two_updates(True)
    full = two_updates(False)
    assert sum(fast[3]) == sum(full[3]) // 2 and fast[4] == []  # half the rows, then none
    assert sum(full[4]) == sum(full[3])
    assert fast[1]["policy/skipped_rows"] == 0.5 and fast[2]["policy/skipped_rows"] == 1.0
    assert "policy/skipped_rows" not in full[1]
    torch.testing.assert_close(fast[1]["policy/grad_norm"], full[1]["policy/grad_norm"], rtol=1e-4, atol=1e-7)
    for name, p in full[5].items():
        torch.testing.assert_close(fast[6][name], full[6][name], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(fast[5][name], p, rtol=1e-4, atol=1e-6)
    assert any(not torch.equal(fast[5][n], fast[6][n]) for n in fast[5])  # the all-zero step moved them
    trainer = fast[0]
    batch = trainer.rollout(1)[0]
    batch.advantages = torch.zeros_like(batch.response_mask, dtype=torch.float32)
    assert trainer.rows_without_gradient(batch, train_policy=True) == set(range(len(batch)))
    assert trainer.rows_without_gradient(batch, train_policy=False) == set()
    for change in ({"kl_coef": 0.01}, {"entropy_coef": 0.01}, {"skip_zero_advantage": False}):
        for k, v in change.items():
            old = getattr(trainer.config, k)
            setattr(trainer.config, k, v)
            assert trainer.rows_without_gradient(batch, train_policy=True) == set(), change
            setattr(trainer.config, k, old)
    critic = RLTrainer(_config(tiny_model_dir, vowel_fn, estimator="gae", kl_coef=0.0), samples,
                       tmp_path / "gae", show_progress=False)
    assert critic.rows_without_gradient(batch, train_policy=True) == set()
