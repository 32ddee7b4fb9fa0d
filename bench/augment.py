"""Augmentation yield on a real model: how many rewrites survive validation, and why the rest do not.

Runs ``openrft augment`` (rewrite + validate + shuffle) with the bundled SmolLM2-135M-Instruct on
the first N questions of a bundled SciKnowEval train task, in one process, and prints:

* the fraction of variants kept after validation (of those parsed, and of those asked for);
* the reasons histogram (first failing rule per dropped variant) and every rule's hit count;
* a check of the option-shuffle remap on every output record (gold option text unchanged,
  options a permutation, ``option_order`` consistent), and on all 800 bundled SciKnowEval
  train records under several seeds.

    python bench/augment.py                                   # 20 questions, k=5, 256 new tokens
    python bench/augment.py --questions 5 --max-new-tokens 96 # quick
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="sciknoweval/chemical_calculation")
    ap.add_argument("--questions", type=int, default=20)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--mode", default="joint", choices=["joint", "single"],
                    help="joint: k variants in one <sep>-separated reply (paper); single: k sampled one-variant replies")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--retries", type=int, default=0, help="re-asks per question (0: one reply per question)")
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="stage directory (default: a temporary one)")
    ap.add_argument("--examples", type=int, default=3, help="kept variants to print")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default; 1 on a busy machine)")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from openrft.augment import AugmentConfig, check_remap, run_augment, shuffle_options
    from openrft.data.loaders import load_bundled
    from openrft.models.backends.hf import TransformersGenerator

    samples = load_bundled(args.task, split="train")[: args.questions]
    generator = TransformersGenerator.from_pretrained(args.model, batch_size=args.batch_size)
    config = AugmentConfig(k=args.k, mode=args.mode, expansion=args.k + 1, max_new_tokens=args.max_new_tokens,
                           temperature=args.temperature, retries=args.retries, batch_size=args.batch_size,
                           seed=args.seed, model=args.model)
    out = args.out or tempfile.mkdtemp(prefix="bench-augment-")
    t0 = time.perf_counter()
    result = run_augment(samples, generator, config, out)
    seconds = time.perf_counter() - t0
    st = result.stats

    # the shuffle remap, on every output record and on every bundled train record
    parents = {s.id: s for s in samples}
    bad = [(s.id, p) for s in result.samples
           for p in check_remap(parents[s.meta["parent_id"]].replace(question=s.question), s)]
    shuffled = sum(1 for s in result.samples if s.meta["option_order"] is not None)
    everything = load_bundled("sciknoweval/all", split="train")
    seeds = range(10)
    bad_all = sum(1 for seed in seeds for s in everything if check_remap(s, shuffle_options(s, seed)))
    moved = sum(1 for seed in seeds for s in everything if shuffle_options(s, seed).choices != s.choices)

    print(f"augment bench: {args.model} rewriting {len(samples)} {args.task} train questions, k={args.k} ({args.mode}), "
          f"max_new_tokens={args.max_new_tokens}, temperature={args.temperature}, retries={args.retries}")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {seconds:.1f} s, {st['replies']} replies")
    parsed, kept, asked = st["variants_parsed"], st["variants_kept"], st["variants_requested"]
    print(f"variants: {asked} asked, {parsed} parsed, {kept} kept after validation")
    print(f"kept fraction: {kept / parsed if parsed else 0:.1%} of parsed, {kept / asked if asked else 0:.1%} "
          f"of asked; questions with >= 1 kept variant: {len(samples) - st['questions_without_variant']}"
          f"/{len(samples)}")
    print("reasons (first failing rule per dropped variant):")
    for reason, n in st["reasons"].items():
        print(f"  {reason:<20} {n:>4}  {n / parsed:6.1%}")
    print("rule hits (a variant can fail several): " + ", ".join(f"{r} {n}" for r, n in st["failed_rules"].items()))
    if st["reply_errors"]:
        print("unusable replies: " + ", ".join(f"{r} {n}" for r, n in st["reply_errors"].items()))
    print(f"samples: {st['samples_in']} in -> {st['samples_out']} out ({st['expansion']}x); methods {st['methods']}")
    print(f"option-shuffle remap on the output: {shuffled - len({b[0] for b in bad})}/{shuffled} shuffled records OK"
          + (f"; PROBLEMS: {bad[:5]}" if bad else ""))
    print(f"option-shuffle remap on all {len(everything)} sciknoweval/all train records x {len(seeds)} seeds: "
          f"{len(everything) * len(seeds) - bad_all}/{len(everything) * len(seeds)} OK "
          f"({moved} reordered)")
    print(f"gold letters of the output: {st['gold_letters']}")
    examples = [(r["id"], v) for r in result.records.values() for v in r["kept"]][: args.examples]
    for sid, v in examples:
        print(f"kept example [{sid}]: {parents[sid].question[:140]!r}\n    -> {v[:200]!r}")
    print(f"run directory: {out}")
    report = {"model": args.model, "task": args.task, "questions": len(samples), "k": args.k, "seconds": seconds,
              "stats": st, "remap_problems": bad, "remap_problems_all": bad_all}
    print(json.dumps({k: report[k] for k in ("questions", "k", "seconds")} |
                     {"kept_fraction": st["kept_fraction"], "reasons": st["reasons"]}))
    return report


if __name__ == "__main__":
    main()
