"""Learning efficacy: does each OpenRFT method beat the one before it on held-out accuracy?

Runs the CPU-sized recipes in ``recipes/small/`` (bundled SmolLM2-135M-Instruct, bundled
``arithmetic`` task: 100 training samples, 200 held-out, fixed seeds) in one go -- Vanilla, SFT,
SFT+RL (outcome), SFT+RL(PRM) and the full SFT+RL(PRM)+DA+ICL -- reusing finished stages across
methods where their settings and inputs match (the synthesis and SFT of the SFT row stand in for
the RL rows' warm-up). Prints the accuracy table (mean over sampled runs, spread = std over runs,
maj@k), the relative gain over Vanilla next to the OpenRFT paper's (+11% relative for its full
method on 8B models), whether each gap exceeds the spread, the wall time per method, and writes
``rewards.png`` (RL reward curves) and ``efficacy.json`` into ``--runs-dir``.

Why ``arithmetic``: SmolLM2 starts clearly above zero (0.25 greedy) and far from ceiling there,
while SVAMP (7%) and GSM8K (2%) sit at its floor and SciKnowEval's multiple-choice tasks near chance.

    python bench/efficacy.py                                    # all five rows (see bench/README.md)
    python bench/efficacy.py --methods vanilla,sft              # a subset
    python bench/efficacy.py --set rl.steps=5 --set test_size=50    # smaller everywhere
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "small"
METHODS = ("vanilla", "sft", "sft_rl", "sft_rl_prm", "sft_rl_prm_da_icl")
PAPER_GAIN = 0.11  # OpenRFT: full method vs Vanilla, relative, averaged over the 8 SciKnowEval tasks (8B policy)


def run_methods(methods, runs_dir: Path, overrides, *, show_progress: bool, quiet: bool) -> dict:
    from openrft.pipeline.recipe import load_recipe
    from openrft.pipeline.runner import run_recipe

    done: list[Path] = []
    out: dict[str, dict] = {}
    for name in methods:
        recipe = load_recipe(RECIPES / f"{name}.yaml", overrides, missing_stages="skip")
        run_dir = runs_dir / recipe.name
        print(f"\n=== {recipe.method} ({RECIPES.name}/{name}.yaml) -> {run_dir}", file=sys.stderr)
        t0 = time.perf_counter()
        run_recipe(recipe, run_dir, show_progress=show_progress, reuse_from=list(done),
                   log=(lambda m: None) if quiet else None)
        out[name] = {"method": recipe.method, "run_dir": run_dir, "seconds": time.perf_counter() - t0}
        done.append(run_dir)
    return out


def collect(runs: dict) -> list[dict]:
    """One row per method: accuracy, spread over sampled runs, maj@k, stage times, RL reward curve."""
    from openrft.report import load_run

    rows = []
    for name, info in runs.items():
        run = load_run(info["run_dir"])
        cell = run.cells[0]
        metrics = cell.eval_results[0].tasks[0]
        stage_seconds = {k: v.seconds for k, v in cell.stages.items()}
        curve = [m["reward"] for m in cell.rl_metrics()] if "rl" in cell.stages else []
        rows.append({"name": name, "method": info["method"], "accuracy": metrics.accuracy,
                     "spread": metrics.accuracy_std, "per_run": metrics.per_run, "maj": metrics.maj_at_k,
                     "k": metrics.k, "items": metrics.items, "seconds": info["seconds"],
                     "stage_seconds": stage_seconds, "reward_curve": curve})
    return rows


def plot_rewards(rows: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in rows if r["reward_curve"]]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for r in curves:
        ys = r["reward_curve"]
        ax.plot(range(1, len(ys) + 1), ys, marker=".", label=r["method"])
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean rollout reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(rows: list[dict]) -> dict:
    by = {r["name"]: r for r in rows}
    base = by.get("vanilla")
    print(f"\n{'method':<22} {'accuracy':>9} {'spread':>8} {'maj@k':>7} {'vs Vanilla':>11} {'wall':>8}")
    for r in rows:
        rel = (r["accuracy"] - base["accuracy"]) / base["accuracy"] if base and base["accuracy"] > 0 else None
        r["relative_gain"] = rel
        rel_s = f"{rel:+.1%}" if rel is not None else "-"
        print(f"{r['method']:<22} {r['accuracy']:>9.3f} {r['spread']:>8.3f} {r['maj']:>7.3f} {rel_s:>11} "
              f"{r['seconds'] / 60:>6.1f} m")
    print("\nwall time per stage (s; skipped = reused from an earlier row):")
    for r in rows:
        print(f"  {r['method']:<22} " + ", ".join(f"{k} {v:.0f}" if v is not None else f"{k} -"
                                              for k, v in r["stage_seconds"].items()))
    checks = {}
    order = [n for n in ("vanilla", "sft", "sft_rl_prm_da_icl") if n in by]
    for lo, hi in zip(order, order[1:]):
        gap = by[hi]["accuracy"] - by[lo]["accuracy"]
        spread = max(by[hi]["spread"], by[lo]["spread"])
        checks[f"{hi} > {lo}"] = {"gap": gap, "spread": spread, "holds": gap > spread}
        print(f"{by[hi]['method']} - {by[lo]['method']}: {gap:+.3f} ({'>' if gap > spread else '<='} spread {spread:.3f})")
    full = by.get("sft_rl_prm_da_icl")
    if full and full.get("relative_gain") is not None:
        print(f"full method vs Vanilla: {full['relative_gain']:+.1%} relative (OpenRFT paper, 8B: +{PAPER_GAIN:.0%})")
    total = sum(r["seconds"] for r in rows)
    print(f"total wall time {total / 60:.1f} min")
    return {"rows": rows, "checks": checks, "total_seconds": total, "paper_relative_gain": PAPER_GAIN}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated recipes of recipes/small ({', '.join(METHODS)})")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override applied to every method (see 'openrft run --help')")
    ap.add_argument("--runs-dir", default="runs/efficacy")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--progress", action="store_true", help="progress bars")
    ap.add_argument("--quiet", action="store_true", help="no per-stage lines")
    args = ap.parse_args(argv)
    from openrft.models.allocator import keep_freed_memory

    keep_freed_memory()  # what 'openrft run' does on CPU: freed memory stays in the process
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if not (RECIPES / f"{m}.yaml").is_file()]
    if unknown:
        ap.error(f"no recipe recipes/small/{unknown[0]}.yaml")
    runs_dir = Path(args.runs_dir)
    runs = run_methods(methods, runs_dir, args.overrides, show_progress=args.progress, quiet=args.quiet)
    rows = collect(runs)
    summary = report(rows)
    png = plot_rewards(rows, runs_dir / "rewards.png")
    if png:
        print(f"reward curves: {png}")
    summary["settings"] = {"methods": methods, "overrides": args.overrides, "threads": args.threads}
    (runs_dir / "efficacy.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
