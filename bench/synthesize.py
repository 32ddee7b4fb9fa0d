"""Warm-up trace synthesis (``openrft synthesize``) on the bundled SmolLM2-135M: how often it finds its own traces.

Samples until correct on ~20 training questions of a bundled task, in one process, and
prints per question the attempts spent, the correct count and the pass rate
(correct / attempts; early stopping makes this a biased, optimistic estimate of the
model's per-sample accuracy), then the mean and a histogram of pass rates, the
histogram of attempts, the fallback fraction and the throughput (completions/s,
tokens/s, kept traces/s).

    python bench/synthesize.py                                  # 20 questions, budget 16, 256 new tokens
    python bench/synthesize.py --questions 5 --budget 4 --max-new-tokens 64   # quick

``--threads 1`` (the default) is much faster than torch's default on a busy shared CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time


def histogram(values, edges):
    """Counts of ``values`` per bin: exactly 0, then (lo, hi] for consecutive edges.

    >>> histogram([0, 0.1, 0.5, 1.0], [0, 0.25, 0.5, 1])
    {'0': 1, '(0, 0.25]': 1, '(0.25, 0.5]': 1, '(0.5, 1]': 1}
    """
    labels = [f"({lo:g}, {hi:g}]" for lo, hi in zip(edges, edges[1:])]
    bins = dict.fromkeys(["0", *labels], 0)
    for v in values:
        if v == 0:
            bins["0"] += 1
        else:
            bins[next(lab for lab, hi in zip(labels, edges[1:]) if v <= hi)] += 1
    return bins


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sciknoweval/chemical_calculation")
    ap.add_argument("--split", default="train")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--rounds", default="4,8,16,32", help="round sizes, capped by the budget")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    ap.add_argument("--out", default=None, help="stage directory (default: a temporary one)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from openrft.data.loaders import load_samples
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.synthesize import SynthesizeConfig, run_synthesize

    samples = load_samples(args.task, split=args.split, limit=args.questions)
    t0 = time.perf_counter()
    generator = TransformersGenerator.from_pretrained(args.model, batch_size=args.batch_size)
    load_s = time.perf_counter() - t0
    config = SynthesizeConfig(budget=args.budget, rounds=tuple(int(x) for x in args.rounds.split(",")),
                              max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                              model=args.model, batch_size=args.batch_size, questions_per_batch=len(samples))
    with tempfile.TemporaryDirectory() as tmp:
        result = run_synthesize(samples, generator, config, args.out or tmp)
    records, stats = result.records, result.stats

    print(f"\n{args.model} on {len(samples)} {args.task} ({args.split}) questions; budget {config.budget}, "
          f"rounds {config.settings.sizes}, max_new_tokens {config.max_new_tokens}, temperature {config.temperature}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}")
    print(f"\n{'question':<34} {'attempts':>8} {'correct':>7} {'pass rate':>9} {'first ok':>8} {'truncated':>9}  kept")
    for r in records:
        kept = "fallback" if r["fallback"] else ("dropped" if r["dropped"] else f"{len(r['traces'])} trace(s)")
        print(f"{r['id']:<34} {r['attempts']:>8} {r['correct']:>7} {r['pass_rate']:>9.3f} "
              f"{r['first_correct'] or '-':>8} {r['truncated']:>9}  {kept}")
    rates = [r["pass_rate"] for r in records]
    print(f"\npass rate per question: mean {sum(rates) / len(rates):.3f}, "
          f"histogram {histogram(rates, [0, 0.125, 0.25, 0.5, 1])}")
    print(f"solved {stats['solved']}/{stats['samples']} ({100 * stats['solved_fraction']:.0f}%), "
          f"fallback {100 * stats['fallback_fraction']:.0f}%, mean attempts {stats['mean_attempts']:.2f}, "
          f"attempts histogram {stats['attempts_histogram']}")
    seconds = stats["seconds"]
    print(f"{stats['completions_generated']} completions, {stats['tokens_generated']} tokens in {seconds:.1f}s "
          f"(+{load_s:.1f}s model load): {stats['completions_per_s']:.2f} completions/s, "
          f"{stats['tokens_generated'] / seconds:.1f} tokens/s, {stats['traces_per_s']:.3f} kept traces/s")
    summary = {k: stats[k] for k in ("samples", "solved", "fallback_fraction", "mean_pass_rate", "mean_attempts",
                                     "attempts_histogram", "completions_per_s", "traces_per_s", "seconds")}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
