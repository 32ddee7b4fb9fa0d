"""Host allocator on CPU: a training step with glibc's default malloc vs freed memory kept in the process.

Each mode runs in its own process (malloc settings are per process): the bundled SmolLM2-135M
with LoRA (rank 4, all linear layers, the SFT stage's default), ``--steps`` forward + backward +
AdamW steps on random token batches of ``--batch`` x ``--length``, then one sampled generation
batch. Prints per-step wall/kernel time, minor page faults and peak RSS, the first ``--warmup``
steps (the heap growing to its working set) reported apart, and the steady-state ratio.
The setting itself is ``openrft.models.allocator.keep_freed_memory`` (every ``openrft``
command that trains or generates applies it on CPU).

    python bench/allocator.py                          # 16 x 96 tokens (an arithmetic SFT batch)
    python bench/allocator.py --batch 8 --length 400   # few-shot prompts are ~4x longer
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODES = ("system", "kept")


def child(args) -> dict:
    import resource

    import torch

    from openrft.models.allocator import keep_freed_memory

    active = keep_freed_memory() if args.child == "kept" else False
    if args.threads:
        torch.set_num_threads(args.threads)
    from openrft.models.backends.base import SamplingParams
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.models.loading import load_model
    from openrft.models.lora import LoraSettings, attach_lora

    torch.manual_seed(0)
    model, tokenizer = load_model(args.model, dtype=torch.float32)
    model = attach_lora(model, LoraSettings(rank=4, alpha=8.0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.length))

    def usage():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), r.ru_stime, r.ru_minflt

    steps = []
    for _ in range(args.steps):
        t0, s0, f0 = usage()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t1, s1, f1 = usage()
        steps.append({"wall": t1 - t0, "sys": s1 - s0, "faults": f1 - f0})
    model.eval()
    gen = TransformersGenerator(model, tokenizer, batch_size=args.gen_batch)
    prompts = [[{"role": "user", "content": f"Calculate {i} + {2 * i + 7}, step by step."}]
               for i in range(args.gen_batch)]
    t0, s0, _ = usage()
    outs = gen.generate(prompts, SamplingParams(temperature=0.7, max_new_tokens=args.gen_tokens, seed=0))
    t1, s1, _ = usage()
    tokens = sum(c.num_tokens for row in outs for c in row)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": args.child, "active": active, "steps": steps, "gen_seconds": t1 - t0, "gen_sys": s1 - s0,
            "gen_tokens": tokens, "peak_rss_mb": peak_mb}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--length", type=int, default=96)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2, help="first steps reported apart (heap growth)")
    ap.add_argument("--gen-batch", type=int, default=32)
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return {}
    if args.warmup >= args.steps:
        ap.error("--steps must exceed --warmup")
    results = {}
    for mode in MODES:
        env = dict(os.environ, OPENRFT_MALLOC=mode)
        cmd = [sys.executable, __file__, "--child", mode, *(argv if argv is not None else sys.argv[1:])]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            sys.exit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"SmolLM2 LoRA step, batch {args.batch} x {args.length} tokens, {args.steps} steps "
          f"(first {args.warmup} = heap growth)")
    print(f"{'malloc':<8} {'warm-up s':>10} {'step s min/med/max':>20} {'kernel s/step':>14} "
          f"{'faults/step':>12} {'gen tok/s':>10} {'peak RSS':>10}")
    summary = {}
    for mode, r in results.items():
        steady = r["steps"][args.warmup:]
        walls = [s["wall"] for s in steady]
        row = {"warmup_seconds": sum(s["wall"] for s in r["steps"][:args.warmup]),
               "step_min": min(walls), "step_median": statistics.median(walls), "step_max": max(walls),
               "sys_per_step": statistics.median(s["sys"] for s in steady),
               "faults_per_step": statistics.median(s["faults"] for s in steady),
               "gen_tok_s": r["gen_tokens"] / r["gen_seconds"], "peak_rss_mb": r["peak_rss_mb"],
               "active": r["active"]}
        summary[mode] = row
        print(f"{mode:<8} {row['warmup_seconds']:>10.1f} "
              f"{row['step_min']:>6.2f}/{row['step_median']:.2f}/{row['step_max']:.2f}".ljust(40)
              + f"{row['sys_per_step']:>14.2f} {row['faults_per_step']:>12.0f} {row['gen_tok_s']:>10.1f} "
              f"{row['peak_rss_mb'] / 1024:>8.2f} GB")
    if not summary["kept"]["active"]:
        print("note: the 'kept' setting did not apply here (not glibc Linux, CUDA present, or MALLOC_* set)")
    ratio = summary["kept"]["step_median"] / summary["system"]["step_median"]
    gen_ratio = summary["kept"]["gen_tok_s"] / summary["system"]["gen_tok_s"]
    print(f"steady-state step time kept/system: {ratio:.2f}x; generation tokens/s kept/system: {gen_ratio:.2f}x")
    summary["step_ratio"] = ratio
    summary["gen_ratio"] = gen_ratio
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "results": results, "summary": summary}, f, indent=2)
    return summary


if __name__ == "__main__":
    main()
