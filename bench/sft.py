"""SFT warm-up on the bundled SmolLM2-135M: loss curve, time per epoch, samples/s, completion loss before/after.

Trains a rank-4 LoRA (openrft's SFT stage, trl's SFTTrainer underneath) on the first N
training samples of one SciKnowEval task, with bare-answer traces (synthesize's fallback
form, ``task.render_answer``) or short traces that restate the right option. ``--eval``
adds held-out accuracy of the base model vs base + adapter (greedy, a few new tokens),
through ``openrft.evaluate.runner.evaluate``. Everything is measured in one process.

    python bench/sft.py                                   # 32 samples, 3 epochs
    python bench/sft.py --samples 16 --epochs 2 --eval --eval-items 20 --max-new-tokens 16
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def short_trace(sample, task) -> str:
    """A one-line rationale that restates the right option, then the task's reference reply."""
    if sample.choices:
        text = sample.choices[sample.gold_index].strip()
        return f"Option {sample.answer} ({text}) matches the question.\n{task.render_answer(sample)}"
    return task.render_answer(sample)


def write_traces(samples, path: Path, kind: str) -> Path:
    from openrft.tasks import task_for

    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            task = task_for(s)
            text = task.render_answer(s) if kind == "bare" else short_trace(s, task)
            f.write(json.dumps({"id": s.id, "sample": s.to_dict(), "traces": [{"text": text, "extracted": s.answer}],
                                "attempts": 1, "correct": 1, "pass_rate": 1.0, "fallback": kind == "bare",
                                "teacher": None}) + "\n")
    return path


def held_out_accuracy(model, tokenizer, samples, max_new_tokens: int) -> tuple[float, float]:
    from openrft.evaluate.runner import EvalConfig, evaluate
    from openrft.models.backends.hf import TransformersGenerator

    config = EvalConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    result = evaluate(TransformersGenerator(model, tokenizer, batch_size=len(samples)), samples, config,
                      show_progress=False)
    return result.average, time.perf_counter() - t0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sciknoweval/chemical_calculation")
    ap.add_argument("--samples", type=int, default=32, help="training samples (first N of the train split)")
    ap.add_argument("--traces", choices=["bare", "short"], default="bare")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--lr", type=float, default=1e-3, help="learning rate (the paper's 5e-5 needs its 8 epochs "
                                                            "over hundreds of traces; a short run needs more)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", action="store_true", help="held-out accuracy, base vs SFT adapter")
    ap.add_argument("--eval-items", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--out", default=None, help="stage directory (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from openrft.data.loaders import load_bundled
    from openrft.models.lora import load_adapter
    from openrft.models.loading import load_model
    from openrft.sft import SFTStageConfig, run_sft

    train = load_bundled(args.task, split="train")[: args.samples]
    tmp = Path(args.out or tempfile.mkdtemp(prefix="openrft-bench-sft-"))
    tmp.mkdir(parents=True, exist_ok=True)
    traces = write_traces(train, tmp / "traces.jsonl", args.traces)
    config = SFTStageConfig(model=args.model, epochs=args.epochs, learning_rate=args.lr, lora_rank=args.rank,
                            lora_alpha=2.0 * args.rank, batch_size=args.batch_size, seed=args.seed)
    print(f"# SFT bench: {args.model}, {len(train)} x {args.task} train ({args.traces} traces), LoRA r={args.rank}, "
          f"lr {args.lr:g}, batch {args.batch_size}, {args.epochs:g} epochs; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    t0 = time.perf_counter()
    result = run_sft(traces, tmp / "sft", config, show_progress=False)
    wall = time.perf_counter() - t0
    train_s = result.stats["train_seconds"]
    steps_per_epoch = result.stats["steps_per_epoch"]
    print("\nloss per optimizer step:")
    for step, loss in result.losses:
        print(f"  step {step:3d}  epoch {step / steps_per_epoch:5.2f}  loss {loss:.4f}")
    summary = {
        "examples": result.examples,
        "steps": result.steps,
        "train_seconds": train_s,
        "seconds_per_epoch": train_s / args.epochs,
        "samples_per_second": result.examples * args.epochs / train_s,
        "stage_wall_seconds": wall,
        "loss_first_step": result.first_loss,
        "loss_last_step": result.last_loss,
        "completion_loss_before": result.loss_before,
        "completion_loss_after": result.loss_after,
    }
    print(f"\ntime per epoch: {summary['seconds_per_epoch']:.1f} s   samples/s: {summary['samples_per_second']:.2f}   "
          f"(stage wall time incl. loading and loss passes: {wall:.1f} s)")
    print(f"completion loss on the training data: before {result.loss_before:.4f} -> after {result.loss_after:.4f}")

    if args.eval:
        test = load_bundled(args.task, split="test")[: args.eval_items]
        model, tok = load_model(args.model)
        base_acc, base_s = held_out_accuracy(model, tok, test, args.max_new_tokens)
        tuned = load_adapter(model, result.weights_dir)
        sft_acc, sft_s = held_out_accuracy(tuned, tok, test, args.max_new_tokens)
        summary.update(eval_items=len(test), base_accuracy=base_acc, sft_accuracy=sft_acc)
        print(f"held-out accuracy on {len(test)} test items (greedy, {args.max_new_tokens} new tokens): "
              f"base {base_acc:.3f} ({base_s:.0f} s) -> SFT adapter {sft_acc:.3f} ({sft_s:.0f} s)")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
