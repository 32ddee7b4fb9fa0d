"""How close to the hardware limit: matmul peak, training-step MFU, generation vs the memory-bandwidth bound.

One command, device chosen automatically (``--device auto``: CUDA when present, else CPU):

1. **Peak**: the best FLOP/s of square matmuls of a few sizes, in the training dtype (fp32 on
   CPU; bf16 on CUDA, fp32/TF32 listed too), and the memory bandwidth of a large tensor copy
   (bytes read + bytes written per second).
2. **Training MFU**: one SFT step (``trainer.training_step``: forward + backward of a batch of
   bare-answer traces, through openrft.sft.stage.make_trainer) and one RL update (our
   ``RLTrainer.update`` on a real rollout batch: policy forward + backward per micro-batch
   (+ the critic's for ``gae``), clipping and the AdamW step on the LoRA weights). FLOPs are
   counted with ``torch.utils.flop_counter.FlopCounterMode`` on one call (CPU flash-attention
   ops added to its table), the time is the median of ``--repeats`` calls without the counter,
   and MFU = counted FLOPs / time / measured peak.

   Cross-check, per pass over D tokens (padded: padding is computed too), D_h of them with
   logits, N = base matmul weights of the blocks, N_head = the output head, N_lora = LoRA
   weights, L layers, attention width d_a, micro-batches of B_m rows x S_m columns::

       forward           2 N D + 2 N_head D_h + 4 L d_a sum(B_m S_m^2) + 2 N_lora D
       LoRA fwd + bwd    4 N D + 4 N_head D_h + 12 L d_a sum(B_m S_m^2) + 6 N_lora D
       textbook 6ND      6 (N + N_head) D

   Backward through a frozen linear layer computes only the input gradient (dX = dY W^T, one
   forward's worth); the weight gradient (another forward's worth) exists only for the LoRA
   weights. So LoRA fwd+bwd is ~2x forward (4 FLOPs per weight per token), not the ~3x (6 N D)
   of full fine-tuning; attention (no weights) keeps its 3x. The 6ND column overstates LoRA work
   by ~1.5x: MFU is computed from the counted FLOPs, never from 6ND.
3. **Generation**: our TransformersGenerator's tokens/s at batch 1 and at ``--gen-batch`` rows,
   against the roofline bound min(b x bandwidth / model bytes, peak / (2 N_all)): each decode
   step must read every weight once (KV-cache reads ignored, so it is an upper bound).

    python bench/mfu.py                                   # SmolLM2-135M, device auto
    python bench/mfu.py --threads 1 --json mfu.json       # CPU, one thread for everything
    python bench/mfu.py --only peak                        # just the machine: matmul peak + bandwidth
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchlib import bench_module

SECTIONS = ("peak", "sft", "rl", "gen")


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def best_time(fn: Callable[[], Any], device, repeats: int) -> float:
    """Fastest of ``repeats`` calls after one warm-up, in seconds."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(device, dtype, sizes: Sequence[int], repeats: int) -> dict:
    """Best FLOP/s of ``n x n @ n x n`` (2 n^3 FLOPs) over ``sizes``."""
    import torch

    per_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        per_size[n] = 2 * n ** 3 / best_time(functools.partial(torch.mm, a, b), device, repeats)
        del a, b
    return {"dtype": str(dtype).replace("torch.", ""), "flops_by_size": per_size, "peak_flops": max(per_size.values())}


def memory_bandwidth(device, mib: int, repeats: int) -> float:
    """Bytes/s of ``dst.copy_(src)`` on a ``mib`` MiB tensor, counting the read and the write."""
    import torch

    src = torch.empty(mib * 2 ** 20, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    return 2 * src.numel() / best_time(lambda: dst.copy_(src), device, repeats)


# ------------------------------------------------------------------------------------ FLOP counting
def flop_counter():
    """A FlopCounterMode that also counts torch's CPU flash-attention ops (missing from its table)."""
    import torch
    from torch.utils import flop_counter as fc

    def forward(q_shape, k_shape, v_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return fc.sdpa_flop_count(q_shape, k_shape, v_shape)

    def backward(grad_shape, q_shape, k_shape, v_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return fc.sdpa_backward_flop_count(grad_shape, q_shape, k_shape, v_shape)

    aten = torch.ops.aten
    extra = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
             aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}
    return fc.FlopCounterMode(display=False, custom_mapping=extra)


def model_shape(model) -> dict:
    """Matmul weight counts of a (peft-wrapped) causal LM: blocks, head, LoRA; layers, attention width."""
    import torch

    head = model.get_output_embeddings()
    n_block = 0
    lora: dict[str, int] = {}  # per adapter name (a gae critic is a second adapter; a pass runs one)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            if ".lora_" in name:
                adapter = name.rsplit(".", 1)[-1]
                lora[adapter] = lora.get(adapter, 0) + module.weight.numel()
            elif "value_head" not in name:
                n_block += module.weight.numel()
    n_lora = sum(lora.values()) // max(len(lora), 1)
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {"n_block": n_block, "n_head": head.weight.numel(), "n_lora": n_lora, "layers": cfg.num_hidden_layers,
            "attn_width": heads * head_dim}


def analytic_flops(shape: dict, tokens: int, head_tokens: int, seq_sq: int, passes: int = 1) -> dict:
    """The cross-check formulas of the module docstring; ``seq_sq`` = sum over micro-batches of B_m S_m^2."""
    attn = 4 * shape["layers"] * shape["attn_width"] * seq_sq
    lora = (4 * shape["n_block"] * tokens + 4 * shape["n_head"] * head_tokens + 3 * attn
            + 6 * shape["n_lora"] * tokens)
    return {"lora_fwd_bwd": passes * lora, "six_nd": 6 * (shape["n_block"] + shape["n_head"]) * tokens,
            "forward": passes * (2 * shape["n_block"] * tokens + 2 * shape["n_head"] * head_tokens + attn
                                 + 2 * shape["n_lora"] * tokens)}


def measure(fn: Callable[[], Any], device, repeats: int) -> tuple[int, list[float]]:
    """(FLOPs of one call, counted) and the wall times of ``repeats`` further calls."""
    with flop_counter() as counter:
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return counter.get_total_flops(), times


def _mfu_row(flops: int, times: list[float], peak: float, analytic: dict, **extra: Any) -> dict:
    t = statistics.median(times)
    return {"flops": flops, "step_s": [min(times), t, max(times)], "achieved_flops": flops / t,
            "mfu": flops / t / peak, "analytic": analytic,
            "counted_over_lora_formula": flops / analytic["lora_fwd_bwd"], **extra}


def sft_mfu(args: argparse.Namespace, peak: float, device) -> dict:
    """One SFT forward + backward (the trainer's own ``training_step``) on the first batch."""
    from openrft.sft.stage import SFTStageConfig, load_for_training, make_trainer

    config = SFTStageConfig(model=args.model, lora_rank=args.rank, lora_alpha=2.0 * args.rank, lora_dropout=0.0,
                            target_modules="q_proj,k_proj,v_proj,o_proj", batch_size=args.sft_batch,
                            max_length=args.sft_max_length, seed=args.seed, measure_loss=False,
                            gradient_checkpointing=False)
    with tempfile.TemporaryDirectory() as tmp:
        _, rows = bench_module("speed")._sft_inputs(args, Path(tmp))
        model, tokenizer = load_for_training(config)
        trainer = make_trainer(model, tokenizer, rows, config, tmp, show_progress=False)
        batch = next(iter(trainer.get_train_dataloader()))
        model = trainer.model
        model.train()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train()'s loop, read by training_step

        def step() -> None:
            model.zero_grad(set_to_none=True)
            trainer.training_step(model, dict(batch))

        step()  # warm-up
        flops, times = measure(step, device, args.repeats)
    ids = batch["input_ids"]
    tokens = ids.numel()
    analytic = analytic_flops(model_shape(model), tokens, tokens, ids.shape[0] * ids.shape[1] ** 2)
    return _mfu_row(flops, times, peak, analytic, batch_shape=list(ids.shape),
                    real_tokens=int(batch["attention_mask"].sum()) if "attention_mask" in batch else tokens)


def rl_mfu(args: argparse.Namespace, peak: float, device, estimator: str) -> dict:
    """Our RL update (policy, + critic for gae) on the rollout batch of one real step."""
    import torch

    from openrft.rewards.base import RewardSettings
    from openrft.rl.config import RLConfig
    from openrft.rl.trainer import RLTrainer

    samples = bench_module("rl_speed").train_samples(args.task, args.prompts)
    config = RLConfig(model=args.model, estimator=estimator, steps=1, prompts_per_step=args.prompts,
                      n_samples=args.n, max_new_tokens=args.max_new_tokens, temperature=1.0,
                      lora_rank=args.rank, lora_alpha=2 * args.rank, lora_targets="q_proj,k_proj,v_proj,o_proj",
                      loss_agg="token-mean", micro_batch_size=args.micro_batch,
                      rollout_batch_size=args.prompts * args.n, tensorboard=False, reward=RewardSettings(),
                      seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = RLTrainer(config, samples, tmp, show_progress=False)
        captured: dict[str, Any] = {}
        update = trainer.update

        def capture(batch, train_policy):
            captured["batch"] = batch
            return update(batch, train_policy)

        trainer.update = capture  # this object only: keep the batch the real step built (advantages included)
        t0 = time.perf_counter()
        row = trainer.step(0)
        step_s = time.perf_counter() - t0
        del trainer.update
        batch = captured["batch"]
        flops, times = measure(lambda: trainer.update(batch, True), device, args.repeats)
        tokens = head_tokens = seq_sq = 0
        for rows in trainer._micro_batches(range(len(batch))):
            mb = batch.select(rows)
            b, s = mb.input_ids.shape
            p, t = mb.prompt_width, mb.response_width
            u = len(torch.unique(torch.cat([mb.input_ids[:, :p], mb.attention_mask[:, :p].long()], 1), dim=0))
            if u < b:  # each distinct prompt runs once, then the responses (rl.policy.response_hidden)
                tokens += u * p + b * (t - 1)
                seq_sq += u * p * p + b * (t - 1) * (s - 1)
            else:
                tokens, seq_sq = tokens + b * s, seq_sq + b * s * s
            head_tokens += b * t
        analytic = analytic_flops(model_shape(trainer.ac.model), tokens, head_tokens, seq_sq,
                                  passes=1)
        if estimator == "gae":  # the critic pass: the same body again (its own adapter), no LM head
            body = analytic_flops(dict(model_shape(trainer.ac.model), n_head=0), tokens, 0, seq_sq)
            analytic = {k: analytic[k] + body[k] for k in analytic}
    return _mfu_row(flops, times, peak, analytic, rows=len(batch), padded_tokens=tokens,
                    full_step_s=step_s, generation_s=row["time/generation"])


def gen_bound(args: argparse.Namespace, peak: float, bandwidth: float, device) -> dict:
    """Our generator's tokens/s at batch 1 and at ``--gen-batch`` rows vs the roofline bound."""
    import torch

    from openrft.models.backends.base import SamplingParams
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.models.loading import load_model
    from openrft.tasks import task_for

    model, tokenizer = load_model(args.model, device=device)
    seen: set[int] = set()
    model_bytes = 0
    for t in [*model.parameters(), *model.buffers()]:
        if t.data_ptr() not in seen:  # tied embeddings once
            seen.add(t.data_ptr())
            model_bytes += t.numel() * t.element_size()
    n_all = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    samples = bench_module("rl_speed").train_samples(args.task, args.prompts)
    prompts = [task_for(s).messages(s) for s in samples]
    out = {"model_bytes": model_bytes, "matmul_weights": n_all}
    for label, batch, chosen, n in (("batch_1", 1, prompts[:1], 1), ("batch_used", args.gen_batch, prompts, args.n)):
        gen = TransformersGenerator(model, tokenizer, batch_size=batch)
        gen.generate(chosen[:1], SamplingParams(max_new_tokens=4))  # warm-up
        rates = []
        for r in range(args.repeats):
            params = SamplingParams(n=n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                    seed=args.seed + r)
            t0 = time.perf_counter()
            res = gen.generate(chosen, params)
            _sync(device)
            rates.append(sum(c.num_tokens for row in res for c in row) / (time.perf_counter() - t0))
        rows = min(batch, len(chosen) * n)
        bw_bound = rows * bandwidth / model_bytes
        compute_bound = peak / (2 * n_all)
        tok_s = statistics.median(rates)
        out[label] = {"rows": rows, "tok_s": [min(rates), tok_s, max(rates)], "bandwidth_bound_tok_s": bw_bound,
                      "compute_bound_tok_s": compute_bound, "bound_tok_s": min(bw_bound, compute_bound),
                      "fraction_of_bound": tok_s / min(bw_bound, compute_bound)}
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="arithmetic", help="bundled task whose first training questions are the prompts")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--only", choices=SECTIONS, default=None)
    ap.add_argument("--matmul-sizes", default="", help="comma-separated (default: 512,1024,2048 CPU; "
                                                       "2048,4096,8192 CUDA)")
    ap.add_argument("--copy-mib", type=int, default=0, help="bandwidth tensor size (default: 512 CPU, 2048 CUDA)")
    ap.add_argument("--estimators", default="grpo,gae")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-n", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--gen-batch", type=int, default=0, help="generation rows per batch (0 = prompts x n)")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank on q/k/v/o")
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--sft-batch", type=int, default=8)
    ap.add_argument("--sft-max-length", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    return ap


def _g(x: float) -> str:
    return f"{x / 1e9:.3g}"


def _print_table(lines: list[list[str]]) -> None:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for k, line in enumerate(lines):
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))
        if k == 0:
            print("-+-".join("-" * w for w in widths))


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.device == "cpu":
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # before CUDA is first touched; openrft picks cuda else
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available() and args.device != "cpu"
    if args.device == "cuda" and not cuda:
        raise SystemExit("--device cuda: no CUDA device is visible")
    device = torch.device("cuda" if cuda else "cpu")
    args.gen_batch = args.gen_batch or args.prompts * args.n
    sizes = [int(s) for s in args.matmul_sizes.split(",") if s] or ([2048, 4096, 8192] if cuda else [512, 1024, 2048])
    sections = [args.only] if args.only else list(SECTIONS)
    name = torch.cuda.get_device_name(0) if cuda else (platform.processor() or platform.machine())
    result: dict[str, Any] = {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
                              "torch": torch.__version__, "settings": vars(args).copy()}
    print(f"# {args.model} on {device} ({name}); {torch.get_num_threads()} CPU threads; torch {torch.__version__}")

    peak = matmul_peak(device, torch.bfloat16 if cuda else torch.float32, sizes, args.repeats)
    bw = memory_bandwidth(device, args.copy_mib or (2048 if cuda else 512), args.repeats)
    result.update(matmul=peak, bandwidth_bytes_s=bw)
    if cuda:
        result["matmul_fp32_tf32"] = matmul_peak(device, torch.float32, sizes, args.repeats)
    print(f"peak matmul ({peak['dtype']}): {_g(peak['peak_flops'])} GFLOP/s  (by size: "
          + ", ".join(f"{n}: {_g(f)}" for n, f in peak["flops_by_size"].items()) + ")")
    print(f"memory bandwidth (copy, read+write): {bw / 1e9:.1f} GB/s")
    p = peak["peak_flops"]
    rows: dict[str, dict] = {}
    if "sft" in sections:
        rows["sft"] = sft_mfu(args, p, device)
    if "rl" in sections:
        for est in [e.strip() for e in args.estimators.split(",") if e.strip()]:
            rows[f"rl_{est}"] = rl_mfu(args, p, device, est)
    if rows:
        table = [["step", "counted GFLOP", "LoRA formula", "6ND", "step s min/med/max", "achieved GFLOP/s", "MFU"]]
        for key, r in rows.items():
            a = r["analytic"]
            table.append([key, _g(r["flops"]), _g(a["lora_fwd_bwd"]), _g(a["six_nd"]),
                          "/".join(f"{t:.3g}" for t in r["step_s"]), _g(r["achieved_flops"]), f"{100 * r['mfu']:.1f}%"])
        print()
        _print_table(table)
    result["training"] = rows
    if "gen" in sections:
        g = gen_bound(args, p, bw, device)
        result["generation"] = g
        print(f"\ngeneration: model {g['model_bytes'] / 2 ** 20:.0f} MiB, "
              f"{g['matmul_weights'] / 1e6:.0f}M matmul weights")
        for label in ("batch_1", "batch_used"):
            r = g[label]
            print(f"  {r['rows']:>3} rows: {r['tok_s'][1]:.1f} tok/s (min {r['tok_s'][0]:.1f}, "
                  f"max {r['tok_s'][2]:.1f}); bound {r['bound_tok_s']:.0f} tok/s (bandwidth "
                  f"{r['bandwidth_bound_tok_s']:.0f}, compute {r['compute_bound_tok_s']:.0f}) -> "
                  f"{100 * r['fraction_of_bound']:.1f}% of bound")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
