"""Processes or threads: on this CPU, do P one-thread processes get more work done than one P-thread process?

The seeded efficacy study runs many independent (task, seed) units; ``bench/efficacy.py --jobs P`` runs P of them
side by side, one thread each. This measures whether that pays, on the work that dominates the study's wall
time: sampled generation with openrft's transformers backend (bundled SmolLM2-135M, fp32, batch 32).

Same prompts, same sampling, the same total number of sequences on both sides:

* threads: one process with P torch threads generates all of them;
* processes: P processes with one thread each, started together, each generates its share.

Each side runs in fresh processes (one warm-up call first) and reports tokens/s over its wall time; the ratio is
processes / threads. ``--repeats`` alternates the two sides.

    python bench/processes.py                      # P = 2, 64 arithmetic prompts, 128 new tokens
    python bench/processes.py --prompts 32 --max-new-tokens 64 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def child(args: argparse.Namespace) -> None:
    """Generate this child's share and print its token count and generation seconds as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from openrft.data.loaders import load_bundled
    from openrft.models.allocator import keep_freed_memory
    from openrft.models.backends.base import SamplingParams
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.models.loading import load_model
    from openrft.tasks import task_for

    keep_freed_memory()
    model, tokenizer = load_model(args.model)
    samples = load_bundled(args.task, split="test")[: args.prompts][args.shard::args.shards]
    prompts = [task_for(s).messages(s) for s in samples]
    gen = TransformersGenerator(model, tokenizer, batch_size=args.batch_size)
    gen.generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    t0 = time.perf_counter()
    out = gen.generate(prompts, params)
    seconds = time.perf_counter() - t0
    print(json.dumps({"tokens": sum(c.num_tokens for row in out for c in row), "seconds": seconds}))


def side(args: argparse.Namespace, processes: int, threads: int) -> dict:
    """``processes`` children with ``threads`` threads each, started together; tokens/s over the slowest's time."""
    cmd = [sys.executable, __file__, "--child", "--model", args.model, "--task", args.task,
           "--prompts", str(args.prompts), "--batch-size", str(args.batch_size), "--max-new-tokens",
           str(args.max_new_tokens), "--temperature", str(args.temperature), "--seed", str(args.seed),
           "--threads", str(threads), "--shards", str(processes)]
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    procs = [subprocess.Popen([*cmd, "--shard", str(i)], stdout=subprocess.PIPE, text=True, env=env)
             for i in range(processes)]
    outs = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"child failed (exit {p.returncode})")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    tokens, seconds = sum(o["tokens"] for o in outs), max(o["seconds"] for o in outs)
    return {"processes": processes, "threads": threads, "tokens": tokens, "seconds": round(seconds, 1),
            "tok_s": round(tokens / seconds, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--prompts", type=int, default=64, help="sequences in all, split over the processes")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parallel", type=int, default=2, help="P: processes on one side, threads on the other")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", help="write the result here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--shard", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--shards", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return {}
    p = args.parallel
    runs: dict[str, list[dict]] = {"threads": [], "processes": []}
    for _ in range(args.repeats):
        runs["threads"].append(side(args, 1, p))
        runs["processes"].append(side(args, p, 1))
        print(f"one process x {p} threads {runs['threads'][-1]['tok_s']} tok/s; "
              f"{p} processes x 1 thread {runs['processes'][-1]['tok_s']} tok/s", file=sys.stderr)
    ratios = [b["tok_s"] / a["tok_s"] for a, b in zip(runs["threads"], runs["processes"])]
    result = {"settings": {k: v for k, v in vars(args).items() if k not in ("child", "threads", "shard", "shards")},
              "cores": os.cpu_count(), "runs": runs,
              "ratio_tok_s": [round(min(ratios), 2), round(statistics.median(ratios), 2), round(max(ratios), 2)]}
    print(json.dumps(result, indent=2))
    print(f"\n{p} one-thread processes / one {p}-thread process, tokens/s (min/median/max): "
          + "/".join(f"{r:.2f}" for r in result["ratio_tok_s"]) + "x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
