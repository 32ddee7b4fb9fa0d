"""The SFT stage's trainer on real traces: time and peak memory with the batch run whole or in micro-batches.

Trains one epoch on the first ``--rows`` examples of a synthesize stage's ``traces.jsonl`` (the study's SFT settings:
LoRA r=4 on all linear layers, lr 1e-3, max length 512) with ``--batch`` examples per optimizer step, split into
micro-batches of ``--micro`` (gradients accumulated, tokens weighted as in the whole batch: the same steps), and
prints the training time and the process's peak resident memory. Run each setting in its own process:

    python bench/sft_memory.py --traces runs/.../synthesize/traces.jsonl --micro 16
    python bench/sft_memory.py --traces runs/.../synthesize/traces.jsonl --micro 2

``--completion-loss`` times the stage's loss measurement instead (``sft.measure_loss``: the mean completion loss
over the rows, no gradients, batches of ``--batch``) and prints the loss; run it from a checkout of each version to
compare them.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time

import torch


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", required=True, help="a synthesize stage's traces.jsonl")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro", type=int, default=2, help="examples per forward/backward")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--completion-loss", action="store_true", help="time completion_loss over the rows instead")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from openrft.models.allocator import keep_freed_memory
    from openrft.sft.dataset import load_sft_examples, to_rows
    from openrft.sft.stage import SFTStageConfig, load_for_training, make_trainer

    keep_freed_memory()  # as `openrft sft` and bench/efficacy.py run it
    rows = to_rows(load_sft_examples(args.traces, True))[: args.rows]
    config = SFTStageConfig(batch_size=args.batch, micro_batch_size=args.micro, epochs=1, learning_rate=1e-3,
                            max_length=512, lora_rank=4, measure_loss=False)
    model, tokenizer = load_for_training(config)
    if args.completion_loss:
        from openrft.sft.stage import completion_loss

        t0 = time.perf_counter()
        loss = completion_loss(model, tokenizer, rows, args.batch, config.max_length)
        result = {"rows": len(rows), "batch": args.batch, "threads": args.threads, "loss": loss,
                  "completion_loss_s": round(time.perf_counter() - t0, 2)}
        print(json.dumps(result))
        return result
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(model, tokenizer, rows, config, out, show_progress=False)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    result = {"rows": len(rows), "batch": args.batch, "micro": config.micro_batches(cuda=False)[0],
              "threads": args.threads, "train_s": round(seconds, 1),
              "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
