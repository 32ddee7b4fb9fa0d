"""The RL loop: rollout -> reward -> advantages -> policy (and critic) updates, resumable.

One step::

    prompts (task.messages, ICL examples when given)  --generate n each-->  completions (token ids kept)
    completions --CompositeReward--> scalar rewards (+ dense step rewards) and their parts
    no-grad passes: rollout log-probs (when needed), reference log-probs (adapter off), critic values
    KL to the reference: in the reward (-kl_coef * kl per token) or in the loss
    advantages (gae | grpo | rloo | reinforce_pp) -> ppo_epochs x minibatches of clipped-surrogate updates

The stage directory holds ``adapter/`` (the policy LoRA, loadable by ``openrft eval --adapter``),
``critic/``, ``metrics.jsonl`` (one line per step), ``checkpoints/step-N/`` and ``manifest.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from openrft.data.sample import Sample
from openrft.models.backends.base import SamplingParams
from openrft.models.backends.hf import TransformersGenerator, render_prompt
from openrft.models.lora import save_atomic
from openrft.core.rundir import atomic_write_json
from openrft.rewards.base import CompositeReward, RewardBatch, build_reward
from openrft.rl.advantages import compute_advantages, masked_mean
from openrft.rl.config import RLConfig, rl_settings
from openrft.rl.logs import MetricsLog, checkpoint_dirs, last_checkpoint
from openrft.rl.losses import (
    explained_variance, get_policy_loss, kl_estimate, kl_loss, value_loss, zero_advantage_rows,
)
from openrft.rl.policy import ActorCritic, load_base
from openrft.rl.rollout import RolloutBatch, build_batch, place_step_rewards
from openrft.rl.runtime import DistState, VLLMRollouts
from openrft.tasks.base import task_for

logger = logging.getLogger(__name__)

STAGE = "rl"
ADAPTER = "adapter"
CRITIC = "critic"
CHECKPOINTS = "checkpoints"

ExamplesFor = Callable[[Sample], Sequence[Sample]]


@dataclass
class RLResult:
    out_dir: Path
    adapter_dir: Path
    steps: int
    skipped: bool
    metrics: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None


# ---------------------------------------------------------------------------------------------- trainer
class RLTrainer:
    """Runs ``config.steps`` RL steps (or ``config.epochs`` passes) on ``samples`` into ``out_dir``. See the module
    docstring."""

    def __init__(self, config: RLConfig, samples: Sequence[Sample], out_dir: str | os.PathLike, *,
                 reward: CompositeReward | None = None, examples_for: ExamplesFor | None = None,
                 show_progress: bool = True):
        if not samples:
            raise ValueError("no training samples")
        self.config = config
        self.samples = list(samples)
        self.steps = config.resolved_steps(len(self.samples))
        self.out = Path(out_dir)
        self.examples_for = examples_for
        self.show_progress = show_progress
        if config.threads:
            torch.set_num_threads(config.threads)
        self.dist = DistState()
        if config.prompts_per_step % self.dist.world:
            raise ValueError(f"prompts_per_step ({config.prompts_per_step}) must be a multiple of the number of "
                             f"processes ({self.dist.world})")
        torch.manual_seed(config.seed)
        model, tokenizer = load_base(config.model, config.adapter, dtype=config.dtype, device=self.dist.device)
        critic = (config.critic if config.estimator == "gae" else None)
        self.ac = ActorCritic(model, tokenizer, config.lora, critic=critic, temperature=config.temperature,
                              dtype=config.dtype)
        self.ac.share_prompts = config.share_prompts
        self.tokenizer = tokenizer
        self.reward = reward if reward is not None else build_reward(config.reward, config.dtype)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.prompts = [task_for(s).messages(s, list(examples_for(s)) if examples_for else []) for s in self.samples]
        self.prompt_ids = [render_prompt(tokenizer, p) for p in self.prompts]
        self._check_lengths(model)
        self.actor_opt, self.actor_sched = self._optimizer(self.ac.policy_parameters(), config.lr)
        critic_params = self.ac.critic_parameters()
        self.critic_opt, self.critic_sched = (self._optimizer(critic_params, config.critic_lr) if critic_params
                                              else (None, None))
        self.generator = self._make_generator()
        self.adv_config = config.resolved_advantage

    # ---- setup ----------------------------------------------------------------------------------
    def _check_lengths(self, model) -> None:
        limit = getattr(model.config, "max_position_embeddings", None)
        if not limit:
            return
        for s, ids in zip(self.samples, self.prompt_ids):
            if len(ids) >= limit:
                raise ValueError(
                    f"sample {s.id}: its prompt has {len(ids)} tokens, at or beyond the model's context of {limit}; "
                    "shorten it (fewer few-shot examples) or drop the sample")
        longest = max(len(ids) for ids in self.prompt_ids)
        if longest + self.config.max_new_tokens > limit:
            logger.warning("rl: the longest prompt (%d tokens) + max_new_tokens (%d) exceeds the context (%d); "
                           "those completions are cut at the context", longest, self.config.max_new_tokens, limit)

    def _optimizer(self, params, lr):
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=self.config.weight_decay)
        warm = max(0, self.config.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / warm) if warm else 1.0)
        return opt, sched

    def _make_generator(self):
        if self.config.rollout_backend == "vllm":
            return VLLMRollouts(self.config, self.out, self.ac, self.tokenizer)
        return TransformersGenerator(self.ac.model, self.tokenizer, batch_size=self.config.rollout_batch_size)

    def indices_for(self, step: int) -> list[int]:
        """Sample indices of ``step``: consecutive slices of per-epoch seeded permutations (deterministic,
        so a resumed run sees the same prompts)."""
        n, k = len(self.samples), self.config.prompts_per_step
        out = []
        for j in range(step * k, step * k + k):
            epoch, pos = divmod(j, n)
            order = list(range(n))
            random.Random(self.config.seed * 7919 + epoch).shuffle(order)
            out.append(order[pos])
        return out[self.dist.rank::self.dist.world]

    # ---- one step -----------------------------------------------------------------------------
    def rollout(self, step: int) -> tuple[RolloutBatch, RewardBatch, list[Sample], dict[str, float]]:
        cfg = self.config
        idx = self.indices_for(step)
        timings: dict[str, float] = {}
        params = SamplingParams(n=cfg.n_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                                max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 1_000_003 + step)
        t0 = time.perf_counter()
        local = isinstance(self.generator, TransformersGenerator)
        with self.ac.merged_policy() if local else contextlib.nullcontext():
            outs = self.generator.generate([self.prompts[i] for i in idx], params,
                                           **({"hidden_states": True} if self.from_rollout else {}))
        timings["time/generation"] = time.perf_counter() - t0
        samples, texts, responses, prompt_ids, groups, truncated = [], [], [], [], [], []
        for g, (i, comps) in enumerate(zip(idx, outs)):
            for c in comps:
                ids = list(c.token_ids) if c.token_ids is not None else self.tokenizer(
                    c.text, add_special_tokens=False)["input_ids"]
                samples.append(self.samples[i])
                texts.append(c.text)
                responses.append(ids)
                prompt_ids.append(self.prompt_ids[i])
                groups.append(g)
                truncated.append(c.finish_reason == "length")
        t0 = time.perf_counter()
        rb = self.reward(samples, texts, prompts=[self.prompts[i] for i in idx for _ in range(cfg.n_samples)])
        timings["time/scoring"] = time.perf_counter() - t0
        batch = build_batch(prompt_ids, responses, groups, rb.rewards, self.pad_id)
        if rb.dense:
            batch.step_rewards, batch.step_mask = place_step_rewards(self.tokenizer, responses, rb.step_rewards(),
                                                                     batch.response_width)
        gen_tokens = sum(len(r) for r in responses)
        timings["tokens_per_s"] = gen_tokens / max(timings["time/generation"], 1e-9)
        timings["response_length"] = gen_tokens / len(responses)
        timings["response_length_max"] = float(max(len(r) for r in responses))
        timings["truncated"] = sum(truncated) / len(truncated)
        batch = batch.to(self.ac.device)
        if self.from_rollout:
            self.fill_from_rollout([c.hidden_states for comps in outs for c in comps], batch)
        return batch, rb, samples, timings

    @property
    def needs_old_logp(self) -> bool:
        """Whether the update needs the rollout policy's log-probs: more than one update per rollout (PPO's ratio
        moves off 1) or a KL penalty in the reward (measured at the rollout policy)."""
        cfg = self.config
        rows = cfg.prompts_per_step // self.dist.world * cfg.n_samples  # this process's rows per step
        single_update = cfg.ppo_epochs == 1 and (cfg.minibatch_size or rows) >= rows
        return (not single_update) or (cfg.kl_coef > 0 and cfg.resolved_kl_in == "reward")

    @property
    def from_rollout(self) -> bool:
        """Whether the rollout's own last-layer states (``rollout_states``) give what a no-grad forward of the policy
        would: the rollout log-probs (through the LM head) and a shared critic's values (through its value head)."""
        return (self.config.rollout_states and isinstance(self.generator, TransformersGenerator)
                and (self.ac.shared_critic or self.needs_old_logp))

    @torch.no_grad()
    def fill_from_rollout(self, hidden: Sequence[torch.Tensor], batch: RolloutBatch) -> None:
        """``batch.old_logp`` (when the update needs them) and a shared critic's ``batch.values``, ``[B, T]``, from
        the states each response token was sampled from (:meth:`ActorCritic.scores_from_states`), micro-batch by
        micro-batch: token t's from the state after prompt + response[:t]."""
        B, T = len(batch), batch.response_width
        states = torch.zeros(B, T, hidden[0].shape[-1], dtype=hidden[0].dtype, device=self.ac.device)
        for row, h in enumerate(hidden):
            states[row, :len(h)] = h
        need_old, shared = self.needs_old_logp, self.ac.shared_critic
        batch.old_logp = torch.zeros(B, T, device=self.ac.device) if need_old else None
        batch.values = torch.zeros(B, T, device=self.ac.device) if shared else None
        for rows in self._micro_batches(range(B)):
            mb = batch.select(rows)
            t = mb.response_width
            logp, values = self.ac.scores_from_states(states[rows, :t], mb, logprobs=need_old, values=shared)
            if logp is not None:
                batch.old_logp[rows, :t] = logp
            if values is not None:
                batch.values[rows, :t] = values
        for t in (batch.old_logp, batch.values):
            if t is not None:
                t.mul_(batch.response_mask)

    def _micro_batches(self, rows: Sequence[int]) -> list[list[int]]:
        m = self.config.micro_batch_size
        return [list(rows[i:i + m]) for i in range(0, len(rows), m)]

    @torch.no_grad()
    def score_pass(self, batch: RolloutBatch, need_old: bool) -> None:
        """Rollout log-probs (if needed), reference log-probs and values, micro-batch by micro-batch."""
        cfg = self.config
        B, T = len(batch), batch.response_width
        dev = self.ac.device
        have_old, have_values = batch.old_logp is not None, batch.values is not None  # the rollout gave them
        need_old = need_old and not have_old
        if need_old:
            batch.old_logp = torch.zeros(B, T, device=dev)
        if cfg.kl_coef > 0:
            batch.ref_logp = torch.zeros(B, T, device=dev)
        if self.ac.value_head is not None and not have_values:
            batch.values = torch.zeros(B, T, device=dev)
        for rows in self._micro_batches(range(B)):
            mb = batch.select(rows)
            t = mb.response_width
            r = torch.tensor(rows, device=dev)
            both = need_old and self.ac.shared_critic and not have_values  # one forward: log-probs and values
            if both:
                logp, _, values = self.ac.logprobs_and_values(mb)
                batch.old_logp[r, :t], batch.values[r, :t] = logp.float(), values
            elif need_old:
                batch.old_logp[r, :t] = self.ac.logprobs(mb)[0].float()
            if cfg.kl_coef > 0:
                batch.ref_logp[r, :t] = self.ac.logprobs(mb, reference=True)[0].float()
            if batch.values is not None and not both and not have_values:
                batch.values[r, :t] = self.ac.values(mb).float()
        for name in ("old_logp", "ref_logp", "values"):
            t = getattr(batch, name)
            if t is not None:
                t.mul_(batch.response_mask)

    def rows_without_gradient(self, batch: RolloutBatch, train_policy: bool) -> set[int]:
        """Rows the update can leave out (``skip_zero_advantage``, :func:`~openrft.rl.losses.zero_advantage_rows`):
        none when anything besides the ppo loss's ``-A x ratio`` reads them (KL in the loss, entropy, a critic)."""
        cfg = self.config
        if (not cfg.skip_zero_advantage or not train_policy or cfg.policy_loss != "ppo" or cfg.entropy_coef != 0
                or self.critic_opt is not None or (cfg.kl_coef > 0 and cfg.resolved_kl_in == "loss")):
            return set()
        return zero_advantage_rows(batch.advantages, batch.response_mask)

    def update(self, batch: RolloutBatch, train_policy: bool) -> dict[str, float]:
        cfg = self.config
        B = len(batch)
        skip = self.rows_without_gradient(batch, train_policy)
        mb_size = cfg.minibatch_size or B
        agg = cfg.resolved_loss_agg
        sums: dict[str, list[float]] = {}
        gen = torch.Generator().manual_seed(cfg.seed + 17)
        groups = batch.group_ids.tolist()
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(B, generator=gen).tolist() if (cfg.ppo_epochs > 1 or mb_size < B) else list(range(B))
            for start in range(0, B, mb_size):
                # a group's rows side by side: micro-batches then share prompts (the minibatch is the same set)
                rows = sorted(order[start:start + mb_size], key=groups.__getitem__)
                n_tok = float(batch.response_mask[rows].sum().clamp(min=1))
                if train_policy:
                    self.actor_opt.zero_grad(set_to_none=True)
                if self.critic_opt is not None:
                    self.critic_opt.zero_grad(set_to_none=True)
                run = [r for r in rows if r not in skip]  # the weights keep every row's share (zero loss)
                for micro in self._micro_batches(run):
                    mb = batch.select(micro)
                    weight = (float(mb.response_mask.sum()) / n_tok) if agg == "token-mean" else len(micro) / len(rows)
                    for k, v in self.backward_micro_batch(mb, weight, train_policy).items():
                        sums.setdefault(k, []).append(v)
                if train_policy and not run:  # zero losses give zero gradients; AdamW steps on them, not on None
                    for p in self.ac.policy_parameters():
                        p.grad = torch.zeros_like(p) if p.grad is None else p.grad
                if train_policy:
                    self.dist.average_gradients(self.ac.policy_parameters())
                    if cfg.max_grad_norm:
                        gn = torch.nn.utils.clip_grad_norm_(self.ac.policy_parameters(), cfg.max_grad_norm)
                        sums.setdefault("policy/grad_norm", []).append(float(gn))
                    self.actor_opt.step()
                    self.actor_sched.step()
                if self.critic_opt is not None:
                    self.dist.average_gradients(self.ac.critic_parameters())
                    if cfg.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(self.ac.critic_parameters(), cfg.max_grad_norm)
                    self.critic_opt.step()
                    self.critic_sched.step()
        return {k: sum(v) / len(v) for k, v in sums.items()} | ({"policy/skipped_rows": len(skip) / B} if skip else {})

    def backward_micro_batch(self, mb: RolloutBatch, weight: float, train_policy: bool) -> dict[str, float]:
        """One micro-batch's losses, backpropagated scaled by ``weight``: the policy's (when it trains) and the
        critic's. A shared critic (``critic: shared``) gets both from one forward and one backward of
        ``policy loss + vf_coef * value loss``; during critic warm-up only its value head learns.

        The place to change the losses (as trl's ``compute_loss``): :meth:`update` calls it for every micro-batch
        and steps the optimizers; it returns the micro-batch's statistics for the step's metrics."""
        cfg = self.config
        agg = cfg.resolved_loss_agg
        shared = self.ac.shared_critic  # it always has a critic optimizer (its value head)
        stats: dict[str, float] = {}
        loss, values = None, None
        if train_policy:
            if shared:
                logp, ent, values = self.ac.logprobs_and_values(mb, with_entropy=True,
                                                                entropy_grad=cfg.entropy_coef > 0)
            else:
                logp, ent = self.ac.logprobs(mb, with_entropy=True, entropy_grad=cfg.entropy_coef > 0)
            loss, stats = self._policy_loss(mb, logp.float(), ent)
            if not shared:
                (loss * weight).backward()
                loss = None
        if self.critic_opt is not None:
            if values is None:
                values = self.ac.values(mb, head_only=shared)
            # the same fixed length as the policy loss: a seq-mean-token-sum-norm loss must not change with the
            # padding width of the micro-batch
            vloss, vstats = value_loss(values, mb.values, mb.returns, mb.response_mask, clip=cfg.value_clip,
                                       agg=agg, max_len=cfg.max_new_tokens)
            stats["critic/loss"] = float(vloss.detach())
            stats.update({f"critic/{k}": v for k, v in vstats.items()})
            loss = (loss if loss is not None else 0.0) + (cfg.vf_coef if shared else 1.0) * vloss
        if loss is not None:
            (loss * weight).backward()
        return stats

    def _policy_loss(self, mb: RolloutBatch, logp: torch.Tensor, ent: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The policy loss of a micro-batch (+ the KL in the loss, - the entropy bonus) and its statistics."""
        cfg = self.config
        agg = cfg.resolved_loss_agg
        old = mb.old_logp if mb.old_logp is not None else logp.detach()
        loss, stats = get_policy_loss(cfg.policy_loss)(
            logp, old, mb.advantages, mb.response_mask, clip_low=cfg.clip_low,
            clip_high=cfg.clip_high, dual_clip=cfg.dual_clip, agg=agg, max_len=cfg.max_new_tokens)
        stats = {f"policy/{k}": v for k, v in stats.items()}
        if cfg.kl_coef > 0 and cfg.resolved_kl_in == "loss":
            kl = kl_loss(logp, mb.ref_logp, mb.response_mask, kind=cfg.resolved_kl_estimator, agg=agg,
                         max_len=cfg.max_new_tokens)
            loss = loss + cfg.kl_coef * kl
            stats["policy/kl_loss"] = float(kl.detach())
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * masked_mean(ent.float(), mb.response_mask)
        stats["policy/loss"] = float(loss.detach())
        stats["entropy"] = float(masked_mean(ent.detach().float(), mb.response_mask))
        return loss, stats

    def step(self, step: int) -> dict[str, Any]:
        cfg = self.config
        batch, rb, samples, row = self.rollout(step)
        t0 = time.perf_counter()
        self.score_pass(batch, self.needs_old_logp)
        token_penalty = None
        if batch.ref_logp is not None and batch.old_logp is not None:
            kl = kl_estimate(batch.old_logp, batch.ref_logp, kind=cfg.resolved_kl_estimator) * batch.response_mask
            row["kl"] = float(masked_mean(kl, batch.response_mask))
            if cfg.resolved_kl_in == "reward":
                token_penalty = -cfg.kl_coef * kl
        row["time/forward"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        adv = compute_advantages(cfg.estimator, scores=batch.scores, mask=batch.response_mask,
                                 group_ids=batch.group_ids, config=self.adv_config, values=batch.values,
                                 step_rewards=batch.step_rewards, step_mask=batch.step_mask,
                                 token_penalty=token_penalty)
        batch.advantages, batch.returns = adv.advantages.to(self.ac.device), adv.returns
        if batch.returns is not None:
            batch.returns = batch.returns.to(self.ac.device)
        train_policy = step >= cfg.critic_warmup_steps
        row.update(self.update(batch, train_policy))
        if "kl" not in row and "policy/kl_loss" in row:
            row["kl"] = row["policy/kl_loss"]  # KL in the loss with one update: measured in the update pass
        row["time/update"] = time.perf_counter() - t0
        if batch.values is not None and batch.returns is not None:
            row["critic/explained_variance"] = explained_variance(batch.values, batch.returns, batch.response_mask)
            row["critic/values_mean"] = float(masked_mean(batch.values.float(), batch.response_mask))
            row["critic/returns_mean"] = float(masked_mean(batch.returns.float(), batch.response_mask))
        row.update({f"adv/{k}": v for k, v in adv.stats.items()})
        summary = rb.summary()
        row.update({f"reward/{k}": v for k, v in summary.items()})
        row.update({f"reward/{k}": v for k, v in rb.within_groups(batch.group_ids.tolist()).items()})
        row["reward"] = float(sum(rb.rewards) / len(rb.rewards))
        row["accuracy"] = float(sum(rb.correct) / len(rb.correct))
        row["lr"] = self.actor_sched.get_last_lr()[0]
        return row

    # ---- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> Path:
        ckpt_dir = self.out / CHECKPOINTS
        if not self.dist.main:
            self.dist.barrier()
            return ckpt_dir / f"step-{step:06d}"

        def save(tmp: Path) -> None:
            self.ac.save_policy(tmp / "policy")
            self.ac.save_critic(tmp / "critic")
            state = {"actor_opt": self.actor_opt.state_dict(), "actor_sched": self.actor_sched.state_dict()}
            if self.critic_opt is not None:
                state.update(critic_opt=self.critic_opt.state_dict(), critic_sched=self.critic_sched.state_dict())
            torch.save(state, tmp / "optimizer.pt")
            atomic_write_json(tmp / "state.json", {"step": step, "time": time.time()})

        path = save_atomic(save, ckpt_dir / f"step-{step:06d}")
        kept = checkpoint_dirs(ckpt_dir)
        for old in kept[:-max(1, self.config.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        self.dist.barrier()
        return path

    def load_checkpoint(self, path: Path) -> None:
        self.ac.load_state(path)
        state = torch.load(path / "optimizer.pt", map_location=self.ac.device, weights_only=False)
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.actor_sched.load_state_dict(state["actor_sched"])
        if self.critic_opt is not None and "critic_opt" in state:
            self.critic_opt.load_state_dict(state["critic_opt"])
            self.critic_sched.load_state_dict(state["critic_sched"])

    # ---- the loop -------------------------------------------------------------------------------
    def train(self) -> RLResult:
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        main = self.dist.main
        log = MetricsLog(self.out, tensorboard=cfg.tensorboard and main, report_to=cfg.report_to if main else [],
                         config=rl_settings(cfg) if main else None)
        start, resumed = 0, None
        found = last_checkpoint(self.out / CHECKPOINTS)
        if found is not None:
            self.load_checkpoint(found[0])
            start = resumed = found[1]
            logger.info("rl: resuming from %s (step %d)", found[0], start)
        if self.dist.main:
            log.truncate_after(start)
        rows: list[dict[str, Any]] = []
        bar = None
        if self.show_progress and self.dist.main:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.steps, initial=start, desc=f"rl {cfg.estimator}", unit="step")
        try:
            for step in range(start, self.steps):
                t0 = time.perf_counter()
                row = {"step": step + 1, **self.step(step)}
                row["time/step"] = time.perf_counter() - t0
                if self.dist.main:
                    log.write(row)
                rows.append(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{row['reward']:.3f}", acc=f"{row['accuracy']:.2f}",
                                    kl=f"{row.get('kl', 0.0):.4f}", len=f"{row['response_length']:.0f}")
                elif (step + 1) % cfg.log_every == 0:
                    logger.info("rl step %d/%d: reward %.3f acc %.2f kl %.4f len %.0f (%.1fs)", step + 1, self.steps,
                                row["reward"], row["accuracy"], row.get("kl", 0.0), row["response_length"],
                                row["time/step"])
                if (step + 1) % cfg.save_every == 0 and step + 1 < self.steps:
                    self.save_checkpoint(step + 1)
        finally:
            if bar is not None:
                bar.close()
            log.close()
        adapter_dir = self.out / ADAPTER
        if self.dist.main:
            save_atomic(lambda tmp: self.ac.save_policy(tmp, stacked_on=cfg.adapter), adapter_dir)
            if self.ac.value_head is not None:
                save_atomic(lambda tmp: self.ac.save_critic(tmp), self.out / CRITIC)
        self.dist.barrier()
        return RLResult(self.out, adapter_dir, self.steps, skipped=False, metrics=rows, resumed_from=resumed)
