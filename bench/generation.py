"""Generation throughput: openrft's transformers backend vs a plain ``model.generate`` call.

Same model, same prompts (bundled SciKnowEval questions with the shared MCQ template,
chat-formatted), same sampling and length budget, measured in one process. Prints
tokens/s for each and their ratio.

    python bench/generation.py                       # SmolLM2-135M, 64 prompts, batch 32, 256 new tokens
    python bench/generation.py --prompts 16 --max-new-tokens 32   # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def plain_generate(model, tokenizer, prompts, batch_size, max_new_tokens, temperature, seed):
    """The baseline users write: pad a batch on the left and call ``model.generate``."""
    from openrft.models.backends.hf import render_prompt

    eos = tokenizer.eos_token_id
    tokens = 0
    for start in range(0, len(prompts), batch_size):
        chunk = [render_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, c in enumerate(chunk):
            ids[i, width - len(c):] = torch.tensor(c)
            mask[i, width - len(c):] = 1
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=temperature > 0, temperature=temperature or None, top_p=None, top_k=None,
                             pad_token_id=tokenizer.pad_token_id)
        for row in out[:, width:].tolist():
            tokens += next((i for i, t in enumerate(row) if t == eos), len(row))
    return tokens


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sciknoweval/chemical_calculation")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from openrft.data.loaders import load_bundled
    from openrft.models.backends.base import SamplingParams
    from openrft.models.backends.hf import TransformersGenerator
    from openrft.models.loading import load_model
    from openrft.tasks import task_for

    model, tokenizer = load_model(args.model)
    samples = load_bundled(args.task, split="test")[: args.prompts]
    prompts = [task_for(s).messages(s) for s in samples]
    gen = TransformersGenerator(model, tokenizer, batch_size=args.batch_size)
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)

    gen.generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up
    t0 = time.perf_counter()
    base_tokens = plain_generate(model, tokenizer, prompts, args.batch_size, args.max_new_tokens,
                                 args.temperature, args.seed)
    t_base = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = gen.generate(prompts, params)
    t_ours = time.perf_counter() - t0
    ours_tokens = sum(c.num_tokens for row in out for c in row)
    lengths = sorted(c.num_tokens for row in out for c in row)

    result = {
        "model": args.model, "prompts": len(prompts), "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "plain_generate_tok_s": round(base_tokens / t_base, 1), "plain_generate_s": round(t_base, 1),
        "openrft_tok_s": round(ours_tokens / t_ours, 1), "openrft_s": round(t_ours, 1),
        "ratio_tok_s": round((ours_tokens / t_ours) / (base_tokens / t_base), 2),
        "ratio_wall": round(t_base / t_ours, 2),
        "output_len_min_median_max": [lengths[0], lengths[len(lengths) // 2], lengths[-1]],
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
