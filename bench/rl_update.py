"""The RL update of one step without generation: each distinct prompt run once (shared) vs every row in full.

Builds the batch of one step of the full efficacy row (recipes/small/sft_rl_prm_da_icl.yaml: 8 prompts x 4
completions, 3 worked-solution shots in each prompt, 96 new tokens, GRPO with the KL in the loss) on the bundled
SmolLM2-135M, with random response tokens of the full length (the forward and backward do not depend on what the
tokens are), and times what the trainer does after the rollout: the reference forward (``score_pass``) and the
policy's forward and backward with its optimizer step (``update``). The two variants alternate within one run,
``--repeats`` times each, so the ratio is measured under the same conditions.

    python bench/rl_update.py --threads 1
    python bench/rl_update.py --threads 1 --estimator gae     # + the critic's forward, backward and values
    python bench/rl_update.py --rollout                         # the whole step: + the rollout generation
    python bench/rl_update.py --rollout --micro-batches 8,4,2   # shared prompts, by micro-batch size instead

``--rollout`` measures the whole RL step: each repeat generates the step's rollouts with the trainer's own
``rollout`` (sampling, grading; the generation is the same code either way, so it is timed once per repeat and
added to both variants), and the two variants then update on that real batch (its responses at their sampled
lengths) instead of random full-length ones.

``--micro-batches M1,M2,...`` compares micro-batch sizes instead (prompts shared in each), alternating on the same
batches: the update's gradients do not depend on the size (each micro-batch's loss is weighted by its share of the
minibatch), only the padding each forward computes and the memory it holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch


def make_batch(trainer, n: int, response_len: int, seed: int):
    """A rollout batch of every training prompt of ``trainer`` with ``n`` random responses of ``response_len``."""
    from openrft.rl.rollout import build_batch

    g = torch.Generator().manual_seed(seed)
    vocab = len(trainer.tokenizer)
    prompts, responses, groups = [], [], []
    for i, ids in enumerate(trainer.prompt_ids):
        for _ in range(n):
            prompts.append(ids)
            responses.append(torch.randint(100, vocab, (response_len,), generator=g).tolist())
            groups.append(i)
    scores = torch.rand(len(prompts), generator=g).tolist()
    batch = build_batch(prompts, responses, groups, scores, trainer.pad_id).to(trainer.ac.device)
    return with_random_advantages(batch, g)


def with_random_advantages(batch, g: torch.Generator):
    """``batch`` with random advantages (and returns) on its response tokens: the update's cost does not depend on
    their values."""
    batch.advantages = torch.randn(batch.response_ids.shape, generator=g).to(batch.response_mask.device) \
        * batch.response_mask
    batch.returns = batch.advantages.clone()
    return batch


def real_batch(trainer, step: int, seed: int):
    """The trainer's own rollout for ``step`` (generation and grading), timed, with random advantages."""
    t0 = time.perf_counter()
    batch = trainer.rollout(step)[0]
    seconds = time.perf_counter() - t0
    return with_random_advantages(batch, torch.Generator().manual_seed(seed)), seconds


def time_update(trainer, batch, share: bool) -> float:
    trainer.ac.share_prompts = share
    t0 = time.perf_counter()
    need_old = trainer.config.estimator == "gae"
    trainer.score_pass(batch, need_old)
    trainer.update(batch, train_policy=True)
    return time.perf_counter() - t0


def _trainer(args, tmp: str, micro_batch: int):
    from openrft.data.loaders import load_sources
    from openrft.rewards.base import RewardSettings
    from openrft.rl.config import RLConfig
    from openrft.rl.trainer import RLTrainer

    pool = load_sources([args.task], split="train", limit_per_task=args.prompts + args.shots)
    shots, samples = pool[:args.shots], pool[args.shots:args.shots + args.prompts]
    config = RLConfig(model=args.model, estimator=args.estimator, prompts_per_step=args.prompts,
                      n_samples=args.n, max_new_tokens=args.response_len,
                      temperature=args.temperature, kl_coef=args.kl_coef, lr=2e-4,
                      lora_rank=8, lora_alpha=16, micro_batch_size=micro_batch, tensorboard=False,
                      reward=RewardSettings(), seed=0, dr_grpo=args.estimator == "grpo")
    return RLTrainer(config, samples, tmp, examples_for=lambda s: shots, show_progress=False)


def compare_micro_batches(args, sizes: list[int]) -> dict:
    """The shared-prompt update (reference forward, forward, backward, optimizer step) at each micro-batch size,
    alternating on the same batches (real rollouts with ``--rollout``); the peak RSS is the whole process's."""
    import dataclasses
    import resource

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(args, tmp, sizes[0])
        trainer.ac.share_prompts = True
        batch = make_batch(trainer, args.n, args.response_len, seed=0)
        time_update(trainer, batch, True)  # warm-up (allocator, kernels)
        times: dict[int, list[float]] = {m: [] for m in sizes}
        for r in range(args.repeats):
            if args.rollout:
                batch = real_batch(trainer, r, seed=r)[0]
            for m in sizes if r % 2 == 0 else sizes[::-1]:
                trainer.config = dataclasses.replace(trainer.config, micro_batch_size=m)
                times[m].append(time_update(trainer, batch, True))
    result = {"rows": len(batch), "threads": torch.get_num_threads(), "settings": vars(args),
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
              "seconds": {m: [round(t, 2) for t in ts] for m, ts in times.items()},
              "response_tokens_mean": round(float(batch.response_mask.sum(1).float().mean()), 1)}
    base = statistics.median(times[sizes[0]])
    for m in sizes:
        med = statistics.median(times[m])
        print(f"  micro-batch {m:>3}: median {med:.2f} s ({med / base:.3f}x of {sizes[0]})  {result['seconds'][m]}")
    print(json.dumps(result))
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="multistep")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-n", type=int, default=4)
    ap.add_argument("--shots", type=int, default=3, help="worked-solution shots per prompt (the full row's ICL)")
    ap.add_argument("--response-len", type=int, default=96)
    ap.add_argument("--estimator", default="grpo")
    ap.add_argument("--kl-coef", type=float, default=0.01)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--temperature", type=float, default=0.7, help="rollout sampling (the small recipes' 0.7)")
    ap.add_argument("--rollout", action="store_true", help="time the whole step: the rollout generation too")
    ap.add_argument("--micro-batches", help="comma-separated micro-batch sizes to compare (prompts shared)")
    args = ap.parse_args(argv)
    from openrft.models.allocator import keep_freed_memory

    keep_freed_memory()  # as 'openrft run' does on CPU
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.micro_batches:
        return compare_micro_batches(args, [int(m) for m in args.micro_batches.split(",")])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _trainer(args, tmp, args.micro_batch)
        batch = make_batch(trainer, args.n, args.response_len, seed=0)
        time_update(trainer, batch, True)  # warm-up (allocator, kernels)
        times: dict[str, list[float]] = {"full": [], "shared": [], "rollout": []}
        for r in range(args.repeats):
            if args.rollout:
                batch, seconds = real_batch(trainer, r, seed=r)
                times["rollout"].append(seconds)
            for share in (False, True):
                times["shared" if share else "full"].append(time_update(trainer, batch, share))
    prompt_tokens = statistics.mean(len(p) for p in trainer.prompt_ids)
    result = {"prompt_tokens_mean": round(prompt_tokens, 1), "rows": len(batch), "response_len": args.response_len,
              "full_s": [round(t, 2) for t in times["full"]], "shared_s": [round(t, 2) for t in times["shared"]],
              "ratio_median": round(statistics.median(times["shared"]) / statistics.median(times["full"]), 3),
              "settings": vars(args), "threads": torch.get_num_threads()}
    if args.rollout:
        full_steps = [g + u for g, u in zip(times["rollout"], times["full"])]
        shared_steps = [g + u for g, u in zip(times["rollout"], times["shared"])]
        result |= {"rollout_s": [round(t, 2) for t in times["rollout"]],
                   "response_tokens_mean": round(float(batch.response_mask.sum(1).float().mean()), 1),
                   "step_ratio_median": round(statistics.median(shared_steps) / statistics.median(full_steps), 3)}
    print(f"{args.estimator}: {len(batch)} rows, prompts {prompt_tokens:.0f} tokens, responses {args.response_len}")
    print(f"  every row in full : median {statistics.median(times['full']):.2f} s  {result['full_s']}")
    print(f"  prompts shared    : median {statistics.median(times['shared']):.2f} s  {result['shared_s']}")
    print(f"  shared / full     : {result['ratio_median']:.3f}x")
    if args.rollout:
        print(f"  rollout           : median {statistics.median(times['rollout']):.2f} s  {result['rollout_s']} "
              f"(last batch: responses {result['response_tokens_mean']:.0f} tokens on average)")
        print(f"  whole step, shared / full: {result['step_ratio_median']:.3f}x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
