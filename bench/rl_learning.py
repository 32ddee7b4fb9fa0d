"""Learning signal of the RL loop on CPU: does RL raise rollout reward and held-out accuracy?

The bundled SmolLM2-135M-Instruct on the bundled ``arithmetic`` task (reasoning-gym basic
arithmetic, where it starts clearly above 0%). Held-out accuracy on the test split is measured
before and after RL, greedy and as the mean (and spread) over sampled runs; RL trains a LoRA
policy on the training split for ``--steps`` steps. Prints the per-step rollout reward curve,
the before/after table, and writes ``curve.png`` (matplotlib) and ``summary.json`` into ``--out``.

    python bench/rl_learning.py                       # grpo, 30 steps x 8 prompts x 4 samples
    python bench/rl_learning.py --estimator gae --steps 30
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def held_out(model, tokenizer, samples, *, n: int, temperature: float, max_new_tokens: int, seed: int) -> dict:
    from openrft.evaluate.runner import EvalConfig, evaluate
    from openrft.models.backends.hf import TransformersGenerator

    gen = TransformersGenerator(model, tokenizer, batch_size=64)
    greedy = evaluate(gen, samples, EvalConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens),
                      show_progress=False)
    sampled = evaluate(gen, samples, EvalConfig(n=n, temperature=temperature, max_new_tokens=max_new_tokens,
                                                seed=seed), show_progress=False)
    per_run = [r for t in sampled.tasks for r in t.per_run]
    return {"greedy": greedy.average, "sampled_mean": statistics.fmean(per_run),
            "sampled_std": statistics.pstdev(per_run) if len(per_run) > 1 else 0.0, "per_run": per_run,
            "maj": sampled.tasks[0].maj_at_k}


def plot(curve: list[float], acc_curve: list[float], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = list(range(1, len(curve) + 1))
    ax.plot(steps, curve, marker=".", label="rollout reward")
    ax.plot(steps, acc_curve, marker=".", alpha=0.6, label="rollout accuracy")
    w = 5
    if len(curve) >= w:
        ma = [statistics.fmean(curve[max(0, i - w + 1): i + 1]) for i in range(len(curve))]
        ax.plot(steps, ma, linewidth=2, label=f"reward, {w}-step mean")
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean over rollouts")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--train", type=int, default=100, help="training samples")
    ap.add_argument("--eval-items", type=int, default=200, help="held-out items (test split)")
    ap.add_argument("--eval-n", type=int, default=3, help="sampled evaluation runs")
    ap.add_argument("--eval-temperature", type=float, default=0.7)
    ap.add_argument("--estimator", default="grpo")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--kl", type=float, default=0.01)
    ap.add_argument("--temperature", type=float, default=0.7,
                    help="rollout temperature (a 135M policy rambles at 1.0 and learns far slower)")
    ap.add_argument("--partial-credit", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=None, help="directory for the run, curve.png and summary.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from openrft.data.loaders import load_bundled
    from openrft.rewards.base import RewardSettings
    from openrft.rl.config import RLConfig
    from openrft.rl.trainer import RLTrainer

    train = load_bundled(args.task, "train")[: args.train]
    test = load_bundled(args.task, "test")[: args.eval_items]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="rl_learning."))
    config = RLConfig(model=args.model, estimator=args.estimator, steps=args.steps, prompts_per_step=args.prompts,
                      n_samples=args.n, max_new_tokens=args.max_new_tokens, temperature=args.temperature, lr=args.lr,
                      critic_lr=2 * args.lr, kl_coef=args.kl, lora_rank=args.rank, lora_alpha=2 * args.rank,
                      seed=args.seed, save_every=max(args.steps, 1), tensorboard=False,
                      reward=RewardSettings(partial_credit=args.partial_credit), micro_batch_size=8)
    trainer = RLTrainer(config, train, out / "rl", show_progress=True)
    evalkw = dict(n=args.eval_n, temperature=args.eval_temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    t0 = time.perf_counter()
    with trainer.ac.model.disable_adapter():
        before = held_out(trainer.ac.model, trainer.tokenizer, test, **evalkw)
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = trainer.train()
    t_rl = time.perf_counter() - t0
    after = held_out(trainer.ac.model, trainer.tokenizer, test, **evalkw)
    curve = [m["reward"] for m in result.metrics]
    acc_curve = [m["accuracy"] for m in result.metrics]
    k = max(1, min(5, len(curve) // 3))
    png = plot(curve, acc_curve, out / "curve.png")

    print(f"\n{args.task}: {len(train)} train, {len(test)} held-out; {args.estimator}, {args.steps} steps x "
          f"{args.prompts} prompts x {args.n}, lr {args.lr:g}, LoRA r={args.rank}, KL {args.kl:g}")
    print("rollout reward per step: " + " ".join(f"{r:.2f}" for r in curve))
    print(f"rollout reward: first {k} steps {statistics.fmean(curve[:k]):.3f} -> last {k} steps "
          f"{statistics.fmean(curve[-k:]):.3f}")
    print(f"{'held-out':<10} {'greedy':>8} {'sampled mean':>13} {'spread (std)':>13} {'maj@' + str(args.eval_n):>7}")
    for name, r in (("before", before), ("after", after)):
        print(f"{name:<10} {r['greedy']:>8.3f} {r['sampled_mean']:>13.3f} {r['sampled_std']:>13.3f} {r['maj']:>7.3f}")
    print(f"time: RL {t_rl:.0f} s ({t_rl / max(1, args.steps):.1f} s/step), one held-out evaluation {t_eval:.0f} s")
    if png:
        print(f"curve: {png}")
    summary = {"settings": vars(args), "curve": curve, "accuracy_curve": acc_curve, "before": before, "after": after,
               "rl_seconds": t_rl, "first_k_reward": statistics.fmean(curve[:k]),
               "last_k_reward": statistics.fmean(curve[-k:])}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
