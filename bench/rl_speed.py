"""One GRPO step: openrft's RL loop vs trl's GRPOTrainer at equal settings — time per step and peak memory.

Same model (bundled SmolLM2-135M, fp32, CPU), same prompts (the first P training questions of a
bundled task, chat template), n completions each, the same number of new tokens, temperature, LoRA
config (rank r on q/k/v/o), learning rate, KL coefficient (0 by default: trl's default skips the
reference model; ``--beta 0.01`` measures both with the reference pass) and token-mean loss (trl's
default ``dapo``). Each framework runs in its own child process (so peak RSS is its own), one
after the other, ``--steps`` steps each; the first step is reported separately as warm-up and the
others give min/median/max.

    python bench/rl_speed.py                     # 8 prompts x 4, 64 new tokens, r=8, 3 steps each
    python bench/rl_speed.py --estimator gae     # our PPO step (critic adapter) next to trl's GRPO step
    python bench/rl_speed.py --trl-checkpointing off   # trl without its default activation checkpointing
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def train_samples(task: str, n: int) -> list:
    """The first ``n`` training samples of a bundled task (the prompts every side of a comparison uses)."""
    from openrft.data.loaders import load_sources

    return load_sources([task], split="train", limit_per_task=n)[:n]


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, in GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: KiB


def run_ours(args) -> dict:
    from openrft.rewards.base import RewardSettings
    from openrft.rl.config import RLConfig
    from openrft.rl.trainer import RLTrainer

    if not args.system_allocator:
        from openrft.models.allocator import keep_freed_memory

        keep_freed_memory()  # what 'openrft rl' and 'openrft run' apply on CPU
    samples = train_samples(args.task, args.prompts)
    config = RLConfig(model=args.model, estimator=args.estimator, steps=args.steps, prompts_per_step=args.prompts,
                      n_samples=args.n, max_new_tokens=args.max_new_tokens, temperature=1.0, lr=args.lr,
                      kl_coef=args.beta, lora_rank=args.rank, lora_alpha=2 * args.rank,
                      lora_targets="q_proj,k_proj,v_proj,o_proj", loss_agg="token-mean",
                      micro_batch_size=args.micro_batch, rollout_batch_size=args.prompts * args.n,
                      tensorboard=False, reward=RewardSettings(), seed=args.seed, critic=args.critic,
                      skip_zero_advantage=not args.no_skip_zero_advantage,
                      rollout_states=not args.no_rollout_states)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RLTrainer(config, samples, tmp, show_progress=False)
        rss_loaded = peak_rss_gb()
        steps = []
        for k in range(args.steps):
            t0 = time.perf_counter()
            row = trainer.step(k)
            steps.append({"total": time.perf_counter() - t0, "generation": row["time/generation"],
                          "forward": row["time/forward"], "update": row["time/update"],
                          "tokens": row["response_length"] * args.prompts * args.n,
                          "skipped_rows": row.get("policy/skipped_rows", 0.0)})
    return {"steps": steps, "peak_rss_gb": peak_rss_gb(), "rss_after_load_gb": rss_loaded}


def run_trl(args) -> dict:
    import datasets
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from openrft.models.loading import load_model
    from openrft.rewards.outcome import OutcomeReward
    from openrft.tasks import task_for

    samples = train_samples(args.task, args.prompts)
    by_id = {s.id: s for s in samples}
    rows = [{"prompt": task_for(s).messages(s), "sample_id": s.id} for s in samples]
    dataset = datasets.Dataset.from_list(rows * (args.steps + 1))
    outcome = OutcomeReward()

    def reward(prompts, completions, sample_id, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return outcome([by_id[i] for i in sample_id], texts)

    model, tokenizer = load_model(args.model)
    rss_loaded = peak_rss_gb()
    times: list[dict] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append({"total": time.perf_counter() - self.t0})

        def on_log(self, args_, state, control, logs=None, **k):
            if logs and times and "completions/mean_length" in logs:
                times[-1]["tokens"] = logs["completions/mean_length"] * args.prompts * args.n

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(output_dir=tmp, per_device_train_batch_size=args.prompts * args.n, num_generations=args.n,
                         max_completion_length=args.max_new_tokens, max_steps=args.steps, learning_rate=args.lr,
                         beta=args.beta, temperature=1.0, logging_steps=1, report_to=[], use_cpu=True, bf16=False,
                         save_strategy="no", seed=args.seed, shuffle_dataset=False, gradient_accumulation_steps=1,
                         disable_tqdm=True, activation_checkpointing=args.trl_checkpointing == "on")
        lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=lora, callbacks=[Clock()])
        trainer.train()
    return {"steps": times, "peak_rss_gb": peak_rss_gb(), "rss_after_load_gb": rss_loaded}


def run_child(which: str, argv: list[str], threads: int, script: str | os.PathLike = __file__,
              env: dict[str, str] | None = None) -> dict:
    """Run ``python <script> --child <which> <argv>`` in a fresh process (so its peak RSS is its own) and
    return the JSON dict it prints on its last stdout line. bench/speed.py reuses this for its sides."""
    env = dict(os.environ, **(env or {}))
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, str(script), "--child", which, *argv], capture_output=True, text=True,
                         env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{which} child failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stats(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="arithmetic", help="bundled task whose training questions are the prompts")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-n", type=int, default=4, help="completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--beta", type=float, default=0.0, help="KL coefficient for both (0 = no reference pass)")
    ap.add_argument("--estimator", default="grpo", help="our estimator (trl runs GRPO)")
    ap.add_argument("--micro-batch", type=int, default=8, help="our completions per forward/backward")
    ap.add_argument("--no-skip-zero-advantage", action="store_true",
                    help="our update runs the rows whose advantages are all zero too (rl.skip_zero_advantage off)")
    ap.add_argument("--no-rollout-states", action="store_true",
                    help="the rollout log-probs (when the update needs them) and a shared critic's values from a "
                         "forward over the rollout (rl.rollout_states off), not from the states the rollout computed")
    ap.add_argument("--critic", default="adapter",
                    help="our gae critic: adapter (a second LoRA adapter) | shared (a value head on the policy)")
    ap.add_argument("--trl-checkpointing", choices=["on", "off"], default="on",
                    help="activation checkpointing in trl (on: trl's default; ours never recomputes activations)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each child (0 = torch default)")
    ap.add_argument("--only", choices=["ours", "trl"], default=None, help="run one side only")
    ap.add_argument("--system-allocator", action="store_true",
                    help="ours without openrft's CPU allocator setting (freed memory kept in the process)")
    ap.add_argument("--child", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    return ap


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.child:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        result = (run_ours if args.child == "ours" else run_trl)(args)
        print(json.dumps(result))
        return result
    child_argv = [a for a in argv]
    sides = [args.only] if args.only else ["ours", "trl"]
    results = {side: run_child(side, child_argv, args.threads) for side in sides}
    print(f"machine: {platform.machine()} {os.cpu_count()} cores; {args.prompts} prompts x {args.n} completions, "
          f"{args.max_new_tokens} new tokens, LoRA r={args.rank} q/k/v/o, beta={args.beta}, fp32, "
          f"ours: {args.estimator}, trl activation checkpointing {args.trl_checkpointing}")
    summary: dict = {"settings": vars(args)}
    for side, res in results.items():
        steps = res["steps"]
        timed = steps[1:] or steps
        tot = _stats([s["total"] for s in timed])
        toks = [s.get("tokens") for s in timed if s.get("tokens")]
        line = (f"{side:>5}: step s min/median/max {tot[0]:.1f}/{tot[1]:.1f}/{tot[2]:.1f} (first {steps[0]['total']:.1f}); "
                f"peak RSS {res['peak_rss_gb']:.2f} GB (after load {res['rss_after_load_gb']:.2f})")
        if toks:
            line += f"; completion tokens/step {statistics.median(toks):.0f}"
        if "generation" in steps[0]:
            line += f"; generation s median {statistics.median(s['generation'] for s in timed):.1f}"
        if "forward" in steps[0]:
            line += (f", no-grad forwards {statistics.median(s['forward'] for s in timed):.1f}, "
                     f"update {statistics.median(s['update'] for s in timed):.1f}")
        if "skipped_rows" in steps[0]:
            skipped = statistics.mean(s["skipped_rows"] for s in timed)
            line += f"; rows left out of the update (zero advantage) {skipped:.0%}"
        print(line)
        summary[side] = {"step_s": tot, "peak_rss_gb": res["peak_rss_gb"], "first_step_s": steps[0]["total"],
                         "tokens_per_step": statistics.median(toks) if toks else None}
    if len(results) == 2:
        t_ratio = summary["ours"]["step_s"][1] / summary["trl"]["step_s"][1]
        m_ratio = summary["ours"]["peak_rss_gb"] / summary["trl"]["peak_rss_gb"]
        summary.update(time_ratio=t_ratio, memory_ratio=m_ratio)
        print(f"ratio ours/trl: time per step {t_ratio:.2f}x (median), peak memory {m_ratio:.2f}x")
    return summary


if __name__ == "__main__":
    main()
