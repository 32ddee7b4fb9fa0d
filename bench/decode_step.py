"""One decode step of openrft's generator, profiled: how far from the matmul peak, and where the time goes.

Prefills ``--batch`` rows of a bundled task's test prompts (optionally with ``--shots`` worked solutions in each, as
the ICL rows' prompts), decodes a few warm-up steps, then times ``--steps`` decode steps of
:class:`openrft.models.backends.hf_batch.DecodeBatch` (sampled, no row finishes) and profiles a few more with
``torch.profiler``. Prints the step time, tokens/s, the fp32 matmul peak measured in the same process
(2048 x 2048, best of 5), the step's share of it (2 x parameters FLOPs per token) and the operators that take
the most time.

    python bench/decode_step.py --threads 2                  # batch 32, arithmetic prompts
    python bench/decode_step.py --threads 1 --shots 3 --task multistep   # few-shot prompts: attention grows
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from benchlib import bench_module


def matmul_peak() -> float:
    """bench/mfu.py's fp32 matmul peak at 2048 x 2048, best of 5."""
    return bench_module("mfu").matmul_peak(torch.device("cpu"), torch.float32, [2048], repeats=5)["peak_flops"]


def prompts_for(task: str, batch: int, shots: int) -> list:
    from openrft.data.loaders import load_bundled
    from openrft.tasks import task_for

    test = load_bundled(task, split="test")[:batch]
    train = load_bundled(task, split="train")[: max(shots, 1) * 10]
    out = []
    for i, s in enumerate(test):
        examples = [train[(i + j) % len(train)] for j in range(shots)]
        out.append(task_for(s).messages(s, examples) if shots else task_for(s).messages(s))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="arithmetic")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shots", type=int, default=0, help="worked-solution shots in each prompt")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--top", type=int, default=8, help="operators listed")
    ap.add_argument("--prepack", choices=["on", "off"], default="on",
                    help="decode with oneDNN-prepacked linear layers, as the generator does by default")
    ap.add_argument("--attention", choices=["fast", "sdpa"], default="fast",
                    help="one-token attention as two matrix products (openrft.models.decode_attention), as the "
                         "generator does by default, or transformers' SDPA")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from torch.profiler import ProfilerActivity, profile

    from openrft.models.allocator import keep_freed_memory
    from openrft.models.backends.base import SamplingParams
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.models.loading import load_model
    from openrft.models.packed import packed_linears

    keep_freed_memory()
    model, tokenizer = load_model(args.model)
    model.eval()
    gen = TransformersGenerator(model, tokenizer, batch_size=args.batch, fast_attention=args.attention == "fast")
    encoded = gen.encode(prompts_for(args.task, args.batch, args.shots))
    params = SamplingParams(temperature=1.0, max_new_tokens=10 ** 6, seed=0)
    batch = gen.new_batch()
    batch.eos_ids = set()  # no row finishes: every step has the full batch
    batch.add(gen.rows_for(encoded, params))
    with packed_linears(model, args.batch) if args.prepack == "on" else contextlib.nullcontext():
        for _ in range(3):
            batch.step()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            batch.step()
        step_s = (time.perf_counter() - t0) / args.steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.profile_steps):
                batch.step()
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1
    ops = [{"op": e.key, "share": round(e.self_cpu_time_total / total, 3),
            "calls_per_step": e.count // args.profile_steps} for e in events[: args.top]]
    peak = matmul_peak()
    n_params = sum(p.numel() for p in model.parameters())
    tok_s = args.batch / step_s
    bound = peak / (2 * n_params)
    result = {"model": args.model, "task": args.task, "batch": args.batch, "shots": args.shots, "prepack": args.prepack,
              "attention": args.attention,
              "prompt_tokens_mean": round(sum(map(len, encoded)) / len(encoded), 1),
              "threads": torch.get_num_threads(), "step_ms": round(step_s * 1e3, 1), "tok_s": round(tok_s, 1),
              "matmul_peak_gflops": round(peak / 1e9, 1), "compute_bound_tok_s": round(bound, 1),
              "fraction_of_bound": round(tok_s / bound, 3), "top_ops": ops}
    print(f"batch {args.batch}, prompts {result['prompt_tokens_mean']:.0f} tokens, {result['threads']} threads: "
          f"decode step {result['step_ms']:.1f} ms = {tok_s:.0f} tok/s; matmul peak {peak / 1e9:.1f} GFLOP/s -> "
          f"bound {bound:.0f} tok/s; {100 * tok_s / bound:.1f}% of it")
    for o in ops:
        print(f"  {o['share'] * 100:5.1f}%  {o['op']}  ({o['calls_per_step']} calls/step)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
