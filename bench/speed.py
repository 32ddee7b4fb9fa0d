"""openrft vs the plain libraries, one command: RL step, SFT epoch and generation, as ratios with their spread.

Every comparison uses the same model (bundled SmolLM2-135M by default, fp32, CPU), the same
prompts (the first ``--prompts`` training questions of ``--task``, chat template), the same n,
lengths and LoRA config (rank r on q/k/v/o, alpha 2r):

- ``rl``:  one RL step of ours (``grpo`` and ``gae``: rollout, scoring, advantages, update) vs one
  ``trl.GRPOTrainer`` step. Runs bench/rl_speed.py's child processes (its settings: temperature 1,
  token-mean loss, KL coefficient ``--beta``).
- ``sft``: one epoch of our SFT stage (``openrft.sft.run_sft`` on bare-answer traces of those
  prompts; the stage's before/after loss passes switched off) vs ``trl.SFTTrainer`` called
  directly on the same rows with the same LoRA config, learning rate, batch size, max length and epochs.
- ``gen``: tokens/s of our ``TransformersGenerator`` (n samples per prompt) vs plain
  ``model.generate`` on the prompts repeated n times (what ``num_return_sequences`` does), same batch.

Each side runs in its own child process (so its peak RSS is its own), one after the other. The
first step/epoch/run of each side is a warm-up and is left out; the next ``--repeats`` give
min/median/max, and the ratio ours/theirs is taken per repeat (repeat i of ours over repeat i of
theirs) and summarised the same way. For RL and SFT the ratio is time (lower is better for us),
for generation it is tokens/s (higher is better for us). trl's trainers turn activation
checkpointing on by default; ours does not on CPU, so it is off for trl too unless
``--trl-checkpointing on`` (bench/rl_speed.py alone keeps trl's default). CUDA is hidden from the
children: this is the CPU comparison (bench/mfu.py gives GPU figures).

    python bench/speed.py                                    # all three, 8 prompts x 4, 64 new tokens, 3 repeats
    python bench/speed.py --only sft --repeats 5 --threads 1 --json speed.json
    python bench/speed.py --only gen --prompts 16 -n 2 --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from benchlib import bench_module

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
SECTIONS = ("rl", "sft", "gen")
CHILDREN = ("sft-ours", "sft-trl", "gen-ours", "gen-plain")


# ------------------------------------------------------------------------------------------- SFT sides
def _epoch_clock(times: list[float]):
    from transformers import TrainerCallback

    class EpochClock(TrainerCallback):
        """Wall time of each training epoch (checkpoint saving happens after ``on_epoch_end``: not counted)."""

        def on_epoch_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, *a: Any, **k: Any) -> None:
            times.append(time.perf_counter() - self.t0)

    return EpochClock()


def _sft_inputs(args: argparse.Namespace, tmp: Path) -> tuple[Path, list[dict]]:
    """Bare-answer traces of the shared prompts (bench/sft.py's writer) and the prompt/completion rows
    our stage builds from them; trl gets exactly these rows."""
    from openrft.sft.dataset import load_sft_examples, to_rows

    samples = bench_module("rl_speed").train_samples(args.task, args.prompts)
    traces = bench_module("sft").write_traces(samples, tmp / "traces.jsonl", "bare")
    return traces, to_rows(load_sft_examples(traces))


def run_sft_ours(args: argparse.Namespace) -> dict:
    """Our SFT stage (trl's SFTTrainer underneath, through openrft.sft.stage.make_trainer)."""
    from openrft.sft import SFTStageConfig, run_sft

    rss = bench_module("rl_speed").peak_rss_gb
    epochs: list[float] = []
    config = SFTStageConfig(model=args.model, epochs=args.repeats + 1, learning_rate=args.sft_lr,
                            lora_rank=args.rank, lora_alpha=2.0 * args.rank, lora_dropout=args.lora_dropout,
                            target_modules=",".join(LORA_TARGETS), batch_size=args.sft_batch,
                            max_length=args.sft_max_length, seed=args.seed, measure_loss=False,
                            gradient_checkpointing=False)
    with tempfile.TemporaryDirectory() as tmp:
        traces, rows = _sft_inputs(args, Path(tmp))
        t0 = time.perf_counter()
        result = run_sft(traces, Path(tmp) / "sft", config, callbacks=[_epoch_clock(epochs)], show_progress=False)
        wall = time.perf_counter() - t0
    return {"times": epochs, "peak_rss_gb": rss(), "examples": result.examples, "optimizer_steps": result.steps,
            "wall_s": wall}


def run_sft_trl(args: argparse.Namespace) -> dict:
    """trl's SFTTrainer called directly, as its docs show, on the same rows and settings."""
    import datasets
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from openrft.models.loading import load_model

    rss = bench_module("rl_speed").peak_rss_gb
    epochs: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        _, rows = _sft_inputs(args, Path(tmp))
        t0 = time.perf_counter()
        model, tokenizer = load_model(args.model)
        cfg = SFTConfig(output_dir=tmp, num_train_epochs=args.repeats + 1, per_device_train_batch_size=args.sft_batch,
                        learning_rate=args.sft_lr, max_length=args.sft_max_length, completion_only_loss=True,
                        logging_steps=1, save_strategy="no", seed=args.seed, data_seed=args.seed, use_cpu=True,
                        bf16=False, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
                        activation_checkpointing=args.trl_checkpointing == "on")
        lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=args.lora_dropout,
                          target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
        trainer = SFTTrainer(model=model, args=cfg, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=lora, callbacks=[_epoch_clock(epochs)])
        out = trainer.train()
        wall = time.perf_counter() - t0
    return {"times": epochs, "peak_rss_gb": rss(), "examples": len(rows), "optimizer_steps": out.global_step,
            "wall_s": wall}


# ------------------------------------------------------------------------------------ generation sides
def _gen_setup(args: argparse.Namespace):
    from openrft.models.loading import load_model
    from openrft.tasks import task_for

    model, tokenizer = load_model(args.model)
    samples = bench_module("rl_speed").train_samples(args.task, args.prompts)
    return model, tokenizer, [task_for(s).messages(s) for s in samples]


def run_gen_ours(args: argparse.Namespace) -> dict:
    """Our TransformersGenerator: n samples per prompt, continuous batching of ``--gen-batch`` rows."""
    from openrft.models.backends.base import SamplingParams
    from openrft.models.backends.hf import TransformersGenerator

    model, tokenizer, prompts = _gen_setup(args)
    gen = TransformersGenerator(model, tokenizer, batch_size=args.gen_batch)
    runs = []
    for r in range(args.repeats + 1):  # run 0 is the warm-up
        params = SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                                seed=args.seed + r)
        t0 = time.perf_counter()
        out = gen.generate(prompts, params)
        seconds = time.perf_counter() - t0
        runs.append({"s": seconds, "tokens": sum(c.num_tokens for row in out for c in row)})
    return _gen_result(runs)


def run_gen_plain(args: argparse.Namespace) -> dict:
    """Plain ``model.generate`` (bench/generation.py's baseline) on each prompt repeated n times."""
    plain_generate = bench_module("generation").plain_generate
    model, tokenizer, prompts = _gen_setup(args)
    expanded = [p for p in prompts for _ in range(args.n)]
    runs = []
    for r in range(args.repeats + 1):
        t0 = time.perf_counter()
        tokens = plain_generate(model, tokenizer, expanded, args.gen_batch, args.max_new_tokens, args.temperature,
                                args.seed + r)
        runs.append({"s": time.perf_counter() - t0, "tokens": tokens})
    return _gen_result(runs)


def _gen_result(runs: list[dict]) -> dict:
    return {"times": [r["s"] for r in runs], "tok_s": [r["tokens"] / r["s"] for r in runs],
            "tokens": [r["tokens"] for r in runs], "peak_rss_gb": bench_module("rl_speed").peak_rss_gb()}


CHILD_FUNCS = {"sft-ours": run_sft_ours, "sft-trl": run_sft_trl, "gen-ours": run_gen_ours, "gen-plain": run_gen_plain}


# ------------------------------------------------------------------------------------------ summaries
def spread(values: Sequence[float]) -> list[float]:
    """``[min, median, max]``."""
    return [min(values), statistics.median(values), max(values)]


def compare(what: str, unit: str, better: str, ours: Sequence[float], theirs: Sequence[float],
            rss: tuple[float | None, float | None], extra: dict | None = None) -> dict:
    """One comparison row: each side's spread, per-repeat ratios ours/theirs, peak memory."""
    ratios = [a / b for a, b in zip(ours, theirs)]
    rss_ratio = rss[0] / rss[1] if rss[0] and rss[1] else None
    return {"what": what, "unit": unit, "better": better, "ours": spread(ours), "theirs": spread(theirs),
            "ratio": spread(ratios), "ratio_of_medians": statistics.median(ours) / statistics.median(theirs),
            "peak_rss_gb": {"ours": rss[0], "theirs": rss[1], "ratio": rss_ratio}, **(extra or {})}


def _rl_argv(args: argparse.Namespace, estimator: str) -> list[str]:
    """bench/rl_speed.py's flags; ``gae-shared`` is gae with the critic's value head on the policy (ReFT's)."""
    estimator, _, critic = estimator.partition("-")
    return ["--critic", critic or "adapter", "--model", args.model, "--task", args.task,
            "--prompts", str(args.prompts), "-n", str(args.n),
            "--max-new-tokens", str(args.max_new_tokens), "--rank", str(args.rank), "--lr", str(args.rl_lr),
            "--beta", str(args.beta), "--estimator", estimator, "--micro-batch", str(args.micro_batch),
            "--steps", str(args.repeats + 1), "--seed", str(args.seed), "--threads", str(args.threads),
            "--trl-checkpointing", args.trl_checkpointing]


def _run_side(script: ModuleType | None, which: str, argv: list[str], args: argparse.Namespace) -> dict:
    """One side, in a child process (default) or in this process (``--in-process``: no per-side memory)."""
    rl = bench_module("rl_speed")
    if args.in_process:
        if script is rl:
            res = (rl.run_ours if which == "ours" else rl.run_trl)(rl.build_parser().parse_args(argv))
        else:
            res = CHILD_FUNCS[which](args)
        return dict(res, peak_rss_gb=None)
    env = {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    return rl.run_child(which, argv, args.threads, script=script.__file__ if script else __file__, env=env)


def run_rl(args: argparse.Namespace) -> dict[str, dict]:
    """trl's GRPO step once, then each of our estimators against it (bench/rl_speed.py's sides)."""
    rl = bench_module("rl_speed")
    trl = _run_side(rl, "trl", _rl_argv(args, "grpo"), args)
    trl_steps = trl["steps"][1:]
    rows = {}
    for est in args.estimators:
        ours = _run_side(rl, "ours", _rl_argv(args, est), args)
        steps = ours["steps"][1:]
        tokens = {"ours": statistics.median(s["tokens"] for s in steps),
                  "theirs": statistics.median(s.get("tokens") or 0 for s in trl_steps) or None}
        rows[f"rl_{est}"] = compare(f"RL step ({est}) vs trl GRPOTrainer", "s/step", "lower",
                                    [s["total"] for s in steps], [s["total"] for s in trl_steps],
                                    (ours["peak_rss_gb"], trl["peak_rss_gb"]),
                                    {"completion_tokens_per_step": tokens,
                                     "ours_generation_s_median": statistics.median(s["generation"] for s in steps),
                                     # rows whose advantages were all zero, left out of our update (exact)
                                     "ours_skipped_rows_mean": statistics.mean(s.get("skipped_rows", 0.0)
                                                                               for s in steps)})
    return rows


def run_sft_section(args: argparse.Namespace, argv: list[str]) -> dict[str, dict]:
    """Our SFT stage's epochs vs trl's SFTTrainer's epochs."""
    ours = _run_side(None, "sft-ours", argv, args)
    trl = _run_side(None, "sft-trl", argv, args)
    return {"sft": compare("SFT epoch vs trl SFTTrainer", "s/epoch", "lower", ours["times"][1:], trl["times"][1:],
                           (ours["peak_rss_gb"], trl["peak_rss_gb"]),
                           {"examples": ours["examples"], "optimizer_steps": {"ours": ours["optimizer_steps"],
                                                                              "theirs": trl["optimizer_steps"]}})}


def run_gen_section(args: argparse.Namespace, argv: list[str]) -> dict[str, dict]:
    """Our generator's tokens/s vs plain ``model.generate``'s."""
    ours = _run_side(None, "gen-ours", argv, args)
    plain = _run_side(None, "gen-plain", argv, args)
    return {"gen": compare("generation vs model.generate", "tok/s", "higher", ours["tok_s"][1:], plain["tok_s"][1:],
                           (ours["peak_rss_gb"], plain["peak_rss_gb"]),
                           {"tokens": {"ours": ours["tokens"][1:], "theirs": plain["tokens"][1:]}})}


def _fmt(v: Sequence[float]) -> str:
    return "/".join(f"{x:.3g}" for x in v)


def print_table(rows: dict[str, dict]) -> None:
    head = ["comparison", "unit", "ours min/med/max", "theirs min/med/max", "ratio ours/theirs min/med/max",
            "peak RSS GB ours/theirs (ratio)"]
    lines = [head]
    for row in rows.values():
        m = row["peak_rss_gb"]
        mem = (f"{m['ours']:.2f}/{m['theirs']:.2f} ({m['ratio']:.2f}x)" if m["ratio"] is not None
               else "n/a (--in-process)")
        lines.append([row["what"], f"{row['unit']} ({row['better']} better)", _fmt(row["ours"]), _fmt(row["theirs"]),
                      f"{_fmt(row['ratio'])}x", mem])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for k, line in enumerate(lines):
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))
        if k == 0:
            print("-+-".join("-" * w for w in widths))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="bundled name, local directory or hub id")
    ap.add_argument("--task", default="arithmetic", help="bundled task whose first training questions are the prompts")
    ap.add_argument("--only", choices=SECTIONS, default=None, help="run one comparison only")
    ap.add_argument("--estimators", default="grpo,gae,gae-shared",
                    help="our RL estimators, each compared to trl's GRPO step (gae-shared: critic: shared)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-n", type=int, default=4, help="completions per prompt (RL and generation)")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="RL completions and generation")
    ap.add_argument("--temperature", type=float, default=1.0, help="generation section (RL always samples at 1.0)")
    ap.add_argument("--gen-batch", type=int, default=0, help="generation rows per batch (0 = prompts x n)")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank on q/k/v/o (alpha = 2 x rank)")
    ap.add_argument("--lora-dropout", type=float, default=0.0, help="SFT LoRA dropout, both sides")
    ap.add_argument("--rl-lr", type=float, default=3e-5)
    ap.add_argument("--beta", type=float, default=0.0, help="RL KL coefficient, both sides (0 = no reference pass)")
    ap.add_argument("--micro-batch", type=int, default=8, help="our RL completions per forward/backward")
    ap.add_argument("--sft-lr", type=float, default=1e-4)
    ap.add_argument("--sft-batch", type=int, default=8)
    ap.add_argument("--sft-max-length", type=int, default=1024, help="tokens per SFT example, both sides")
    ap.add_argument("--trl-checkpointing", choices=["on", "off"], default="off",
                    help="activation checkpointing in trl's trainers: off = as ours on CPU (default), on = trl's "
                         "own default (recomputes activations: slower, less memory)")
    ap.add_argument("--repeats", type=int, default=3, help="timed steps/epochs/runs per side, after one warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each side (0 = torch default)")
    ap.add_argument("--in-process", action="store_true",
                    help="run the sides in this process (quick checks; peak memory per side is then not measured)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--child", choices=CHILDREN, default=None, help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1 (a warm-up step/epoch/run comes on top)")
    if args.gen_batch <= 0:
        args.gen_batch = args.prompts * args.n
    args.estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    if args.child or args.in_process:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # CPU comparison; no effect once CUDA is initialised
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
    if args.child:
        result = CHILD_FUNCS[args.child](args)
        print(json.dumps(result))
        return result
    sections = [args.only] if args.only else list(SECTIONS)
    child_argv = [a for a in argv if a != "--in-process"]
    rows: dict[str, dict] = {}
    t0 = time.perf_counter()
    if "rl" in sections:
        rows.update(run_rl(args))
    if "sft" in sections:
        rows.update(run_sft_section(args, child_argv))
    if "gen" in sections:
        rows.update(run_gen_section(args, child_argv))
    import torch

    settings = {k: v for k, v in vars(args).items() if k not in ("child", "json")}
    machine = {"machine": platform.machine(), "processor": platform.processor(), "cores": os.cpu_count(),
               "torch": torch.__version__, "python": platform.python_version()}
    print(f"# {args.model} fp32 cpu; {args.prompts} prompts x {args.n}, {args.max_new_tokens} new tokens, "
          f"LoRA r={args.rank} q/k/v/o; trl activation checkpointing {args.trl_checkpointing}; "
          f"SFT batch {args.sft_batch}, max length {args.sft_max_length}; generation batch {args.gen_batch}, "
          f"T={args.temperature}; {args.repeats} repeats after 1 warm-up; "
          f"threads {args.threads or 'default'}; {machine['cores']} cores {machine['machine']}; "
          f"{time.perf_counter() - t0:.0f} s")
    print_table(rows)
    result = {"settings": settings, "machine": machine, "comparisons": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
