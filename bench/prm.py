"""PRM scoring speed: all steps of a completion in one forward pass vs one forward per step prefix.

The bundled SmolLM2-135M is read as a Math-Shepherd-format PRM (P(``+``) vs ``-`` at the
``ки`` tag after each step; the model is not a trained PRM, so only the speed and the
agreement of the scores mean anything). Completions are GSM8K test rationales with at least
``--steps`` lines, cut to ``--steps`` steps (calculator annotations ``<<...>>`` removed).

Rows (each measured in this run, ``--repeats`` times, after one untimed warm-up):
- ``per step prefix``: the naive way, one forward per step over the text up to that step's
  tag (``logits_to_keep=1``, so only the last position's logits are computed);
- ``one forward per completion``: :class:`~openrft.rewards.prm.math_shepherd.MathShepherdPRM`
  with ``batch_size=1``;
- ``batched``: the same with ``--batch-size`` completions per right-padded forward.

The speed-up is the per-prefix time over each row's time (min/median/max over repeats); the
script checks that all three give the same scores.

    python bench/prm.py
    python bench/prm.py --completions 16 --steps 6 --repeats 3 --batch-size 8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import torch

import openrft
from openrft.models.loading import load_model
from openrft.rewards.prm.math_shepherd import STEP_TAG, MathShepherdPRM, render_math_shepherd

GSM8K = Path(openrft.__file__).parent / "data" / "bundled" / "gsm8k" / "test.jsonl"


def load_cases(n: int, steps: int, path: Path = GSM8K) -> list[tuple[str, list[str]]]:
    """``n`` (question, steps) pairs from GSM8K rationales with at least ``steps`` lines."""
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        lines = [re.sub(r"<<[^>]*>>", "", x).strip() for x in rec["answer"].split("\n")]
        lines = [x for x in lines if x and not x.startswith("####")]
        if len(lines) >= steps:
            cases.append((rec["question"], lines[:steps]))
        if len(cases) == n:
            break
    if len(cases) < n:
        raise SystemExit(f"only {len(cases)} GSM8K rationales have {steps}+ lines; ask for fewer")
    return cases


def per_prefix(model, tokenizer, cases, candidates: list[int]) -> list[list[float]]:
    """One forward per step prefix, read at its last token."""
    out = []
    with torch.inference_mode():
        for question, steps in cases:
            scores = []
            for k in range(1, len(steps) + 1):
                text, _ = render_math_shepherd(question, steps[:k], STEP_TAG)
                enc = tokenizer(text, return_tensors="pt").to(model.device)
                logits = model(**enc, logits_to_keep=1).logits[0, -1, candidates].float()
                scores.append(torch.softmax(logits, -1)[0].item())
            out.append(scores)
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def spread(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="causal LM read as a Math-Shepherd PRM")
    ap.add_argument("--completions", type=int, default=16, help="completions scored per repeat")
    ap.add_argument("--steps", type=int, default=6, help="steps per completion")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (after one warm-up)")
    ap.add_argument("--batch-size", type=int, default=8, help="completions per forward in the batched row")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model, device=args.device)
    cases = load_cases(args.completions, args.steps)
    questions, steps = [q for q, _ in cases], [s for _, s in cases]
    single = MathShepherdPRM(model, tokenizer, batch_size=1)
    batched = MathShepherdPRM(model, tokenizer, batch_size=args.batch_size)
    n_tokens = [len(single.encode(q, s)[0]) for q, s in cases]

    runs = {
        "per step prefix": lambda: per_prefix(model, tokenizer, cases, single.candidate_ids),
        "one forward per completion": lambda: single.score_batch(questions, steps),
        f"batched ({args.batch_size} per forward)": lambda: batched.score_batch(questions, steps),
    }
    scores = {name: fn() for name, fn in runs.items()}  # warm-up, and the scores compared below
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            seconds[name].append(timed(fn)[1])

    names = list(runs)
    base = scores[names[0]]
    max_diff = max(abs(a - b) for name in names[1:] for x, y in zip(base, scores[name]) for a, b in zip(x, y))
    forwards = {names[0]: sum(len(s) for s in steps), names[1]: len(cases),
                names[2]: -(-len(cases) // args.batch_size)}
    result = {
        "device": str(model.device), "completions": len(cases), "steps": args.steps,
        "tokens_min_median_max": spread(n_tokens), "max_abs_diff": max_diff, "same_scores": max_diff < 1e-4,
        "rows": {},
    }
    print(f"{len(cases)} completions x {args.steps} steps, {min(n_tokens)}-{max(n_tokens)} tokens each, "
          f"{model.device}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print(f"{'method':<30}{'forwards':>9}{'seconds (median)':>18}{'speed-up min/median/max':>26}")
    for name in names:
        ratios = [p / s for p, s in zip(seconds[names[0]], seconds[name])]
        lo, mid, hi = spread(ratios)
        result["rows"][name] = {"forwards": forwards[name], "seconds": seconds[name], "speedup": (lo, mid, hi)}
        print(f"{name:<30}{forwards[name]:>9}{statistics.median(seconds[name]):>18.3f}"
              f"{f'{lo:.2f}x / {mid:.2f}x / {hi:.2f}x':>26}")
    print(f"same scores: {'yes' if result['same_scores'] else 'NO'} (max |diff| {max_diff:.2e})")
    return result


if __name__ == "__main__":
    main()
