"""Learning efficacy, seeded: does each OpenRFT ingredient add accuracy beyond the strongest cheap baseline?

Runs the CPU-sized recipes of ``recipes/small/`` (bundled SmolLM2-135M-Instruct) on one or more bundled tasks,
once per training seed (``--set seed=S``: synthesis, SFT, PRM, RL and evaluation sampling all follow it), and
compares the rows with the same decoding:

    vanilla            the base model, zero-shot
    vanilla_icl        the base model with the full row's 3 worked-solution shots (the cheap baseline to beat)
    sft                self-synthesized traces -> LoRA SFT warm-up
    sft_rl             + RL on the outcome reward (Dr.GRPO)
    sft_rl_prm         + the PRM the prm stage trains from the policy's own rollouts (Math-Shepherd labels), sparse
    sft_rl_prm_dense   the same PRM, dense per-step rewards
    sft_rl_prm_da      + augmented questions in RL (template rewriter: verified renumbered/reworded variants)
    sft_rl_prm_da_icl  + 3-shot ICL in every stage (the full method)

Every row is evaluated on the same held-out questions both sampled (the recipe's temperature, ``n`` runs) and
greedy, in one evaluation pass (``eval.greedy_run``: each prompt is prefilled once for its sampled and its greedy
completions; the study once ran greedy as a second run of each row). Rows within a (task, seed)
share what they can through ``--reuse``: the SFT warm-up of ``sft`` stands in for every RL row's, the PRM of
``sft_rl_prm`` for the dense and DA rows' (augmented questions feed RL only).

Printed per task: each row's accuracy as mean ± std over training seeds (the evaluation spread, the std over
sampled runs within a seed, in its own column), greedy likewise; then a paired table, each row minus the row it
builds on with the seed-paired mean difference and its 95% t-interval; then the claims in words (full method
>= Vanilla+ICL + 30% relative, SFT+RL(PRM) > SFT+RL, ...), each marked holds / does not hold. A gap holds
only when it is beyond 2x the larger seed std of the two rows and its seed-paired 95% interval is above zero; the
PRM's best-of-8 figures (its pick, its weighted vote) hold only when their seed-paired gain over maj@8 reaches
+0.03 with its 95% interval above zero. ``efficacy.json`` keeps every number.

    python bench/efficacy.py                                           # 2 tasks x 3 seeds x 8 rows
    python bench/efficacy.py --tasks multistep --seeds 0 --rows vanilla,vanilla_icl,sft
    python bench/efficacy.py --set rl.steps=5 --set test_size=50       # smaller everywhere
    python bench/efficacy.py --jobs 2                                  # two (task, seed) units at a time
    python bench/efficacy.py --judge judge:smollm2-135m                # + the judge PRM's quality, first seed

``--jobs N`` runs N (task, seed) units side by side, each in its own process with ``threads / N`` torch threads
(default: the CPU count / N) and its own log (``<runs-dir>/logs/<task>-seed<S>.log``); the rows of a unit stay in
order because they reuse each other's stages. On the 2-core CPU two one-thread processes decode 1.4-1.8x the
tokens of one two-thread process (bench/README.md), but each full row takes ~11 GB in RL: mind the memory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "small"
ROWS = ("vanilla", "vanilla_icl", "sft", "sft_rl", "sft_rl_prm", "sft_rl_prm_dense", "sft_rl_prm_da",
        "sft_rl_prm_da_icl")
#: the row each row builds on (its paired comparison)
PARENT = {"vanilla_icl": "vanilla", "sft": "vanilla", "sft_rl": "sft", "sft_rl_prm": "sft_rl",
          "sft_rl_prm_dense": "sft_rl_prm", "sft_rl_prm_da": "sft_rl_prm", "sft_rl_prm_da_icl": "sft_rl_prm_da"}
TASKS = ("arithmetic", "multistep")
PAPER_GAIN = 0.11  # OpenRFT: full method vs Vanilla, relative, averaged over the 8 SciKnowEval tasks (8B policy)
TARGET_GAIN = 0.30  # the claim checked here: full method vs Vanilla+ICL, relative
#: every row's evaluation also decodes each question greedily, in the same pass as its sampled runs
GREEDY_RUN = ["eval.greedy_run=true"]
# two-sided 95% Student t quantiles by degrees of freedom (n seeds - 1)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def _t95(df: int) -> float:
    return _T95.get(df, 1.96)


def mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (None with fewer than 2 values).

    >>> [round(x, 4) for x in mean_std([0.2, 0.4])]
    [0.3, 0.1414]
    """
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def paired(child: list[float], parent: list[float]) -> dict:
    """Seed-paired difference ``child - parent``: mean, std and a 95% t-interval (None with one seed).

    >>> d = paired([0.3, 0.35, 0.4], [0.2, 0.3, 0.3])
    >>> round(d["mean"], 3), d["n"], d["low"] > 0
    (0.083, 3, True)
    """
    diffs = [c - p for c, p in zip(child, parent)]
    mean, std = mean_std(diffs)
    out = {"n": len(diffs), "mean": mean, "std": std, "low": None, "high": None, "diffs": diffs}
    if std is not None:
        half = _t95(len(diffs) - 1) * std / math.sqrt(len(diffs))
        out["low"], out["high"] = mean - half, mean + half
    return out


def run_row(row: str, task: str, seed: int, runs_dir: Path, overrides: list[str], reuse: list[Path], *,
            show_progress: bool, quiet: bool) -> dict:
    """One row, one task, one seed: its run, evaluated sampled and greedy in one pass."""
    from openrft.pipeline.recipe import load_recipe
    from openrft.pipeline.runner import run_recipe

    recipe = load_recipe(RECIPES / f"{row}.yaml", [f"data={task}", f"seed={seed}", *GREEDY_RUN, *overrides],
                         missing_stages="skip")
    run_dir = runs_dir / task / f"seed{seed}" / row
    print(f"\n=== {task} seed {seed}: {recipe.method} -> {run_dir}", file=sys.stderr)
    t0 = time.perf_counter()
    run_recipe(recipe, run_dir, show_progress=show_progress, reuse_from=reuse,
               log=(lambda m: None) if quiet else None)
    return {"row": row, "task": task, "seed": seed, "method": recipe.method, "sampled_dir": run_dir,
            "sampled_seconds": time.perf_counter() - t0}


def _merge(earlier: list[dict], new: list[dict]) -> list[dict]:
    """``earlier`` results with those of ``new`` replacing the same (task, seed, row)."""
    key = lambda r: (r["task"], r["seed"], r["row"])  # noqa: E731
    fresh = {key(r) for r in new}
    return [r for r in earlier if key(r) not in fresh] + list(new)


def _save_partial(partial: Path, new: list[dict]) -> None:
    """Merge ``new`` into ``partial`` as it is on disk now, under a lock: invocations running side by side (one
    seed each) keep each other's rows."""
    import fcntl

    with open(partial.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        earlier = json.loads(partial.read_text()) if partial.is_file() else []
        tmp = partial.with_suffix(".tmp")
        tmp.write_text(json.dumps(_merge(earlier, new), indent=1, default=str))
        tmp.replace(partial)


def collect(info: dict) -> dict:
    """Accuracies of one (row, task, seed) from its run directory, plus stage times and PRM quality."""
    from openrft.report import load_run

    cell = load_run(info["sampled_dir"]).cells[0]
    m = cell.eval_results[0].tasks[0]
    quality = cell.prm_quality()
    trained = (quality or {}).get("scorers", {}).get("trained")
    rl = cell.rl_metrics()
    return {
        "row": info["row"], "method": info["method"], "task": info["task"], "seed": info["seed"],
        "sampled": m.accuracy, "eval_spread": m.accuracy_std, "per_run": m.per_run, "maj": m.maj_at_k, "k": m.k,
        "greedy": m.greedy_accuracy, "items": m.items, "seconds": info["sampled_seconds"],
        "stage_seconds": {k: v.seconds for k, v in cell.stages.items()},
        "reward_curve": [r["reward"] for r in rl],
        "prm_quality": None if trained is None else {
            "auc": trained["steps"]["auc"], "first_error_f1": trained["first_error"]["f1"],
            **_reply_aucs(trained, quality, cell, info["task"]),
            "best_of_k": trained.get("best_of_k", {}).get("k"),
            "constant_auc": quality["scorers"].get("constant", {}).get("steps", {}).get("auc"),
            "judge_auc": quality["scorers"].get("judge", {}).get("steps", {}).get("auc")},
        "augment": _augment_stats(cell),
    }


def _reply_aucs(trained: dict, quality: dict, cell, task: str) -> dict:
    """The trained PRM's reply AUC, pooled and within a question: from quality.json, or (a quality.json measured
    before that measure existed) from its stored reply scores and the held-out replies, graded again."""
    replies = trained.get("replies")
    if replies is None and (quality.get("reply_scores") or {}).get("trained") is not None:
        from benchlib import bench_module
        from openrft.reward_models.quality import QUALITY_DIR, reply_quality

        graded = bench_module("prm_settings").held_out_replies_of(cell.stage_dir("prm") / QUALITY_DIR, task)
        replies = reply_quality(quality["reply_scores"]["trained"], graded.correct)
    return {} if replies is None else {"reply_auc": replies["auc"], "reply_within_auc": replies["within_question_auc"]}


def _add_reply_aucs(results: list[dict], runs_dir: Path) -> None:
    """Rows collected before the reply AUCs were: add them from their run directories (where those still are)."""
    from openrft.report import load_run

    for r in results:
        q = r.get("prm_quality")
        run = runs_dir / r["task"] / f"seed{r['seed']}" / r["row"]
        if q is None or "reply_auc" in q or not run.is_dir():
            continue
        cell = load_run(run).cells[0]
        quality = cell.prm_quality() or {}
        trained = quality.get("scorers", {}).get("trained")
        if trained is not None:
            q.update(_reply_aucs(trained, quality, cell, r["task"]))


def _augment_stats(cell) -> dict | None:
    path = cell.stage_dir("augment") / "manifest.json"
    if not path.is_file():
        return None
    stats = json.loads(path.read_text()).get("stats", {})
    return {k: stats.get(k) for k in ("samples_in", "samples_out", "variants_per_question", "methods")}


def _fmt(mean, std=None, digits=3) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def summarize(results: list[dict], rows: list[str], tasks: list[str]) -> dict:
    """Per task: the seeded table, the paired table and the claims; printed and returned."""
    summary: dict = {"tasks": {}}
    for task in tasks:
        mine = [r for r in results if r["task"] == task]
        by = {row: sorted((r for r in mine if r["row"] == row), key=lambda r: r["seed"]) for row in rows}
        by = {row: rs for row, rs in by.items() if rs}
        table = {}
        print(f"\n## {task}: accuracy on {mine[0]['items'] if mine else '?'} held-out questions, mean ± std over "
              "training seeds")
        print(f"{'row':<24} {'seeds':>5} {'sampled':>15} {'eval spread':>11} {'greedy':>15} {'maj@k':>7} {'wall':>7}")
        for row, rs in by.items():
            s_mean, s_std = mean_std([r["sampled"] for r in rs])
            g_mean, g_std = mean_std([r["greedy"] for r in rs])
            spread = statistics.fmean([r["eval_spread"] for r in rs])
            maj = statistics.fmean([r["maj"] for r in rs])
            wall = sum(r["seconds"] for r in rs)
            table[row] = {"method": rs[0]["method"], "seeds": [r["seed"] for r in rs], "sampled": s_mean,
                          "sampled_seed_std": s_std, "eval_spread": spread, "greedy": g_mean, "greedy_seed_std": g_std,
                          "maj": maj, "seconds": wall}
            print(f"{rs[0]['method']:<24} {len(rs):>5} {_fmt(s_mean, s_std):>15} {spread:>11.3f} "
                  f"{_fmt(g_mean, g_std):>15} {maj:>7.3f} {wall / 60:>5.1f} m")
        pairs = {}
        print(f"\n{'row - the row it builds on':<48} {'sampled: paired diff [95% CI]':>34} {'greedy: paired diff':>22}")
        for row, rs in by.items():
            parent = PARENT.get(row)
            if parent not in by:
                continue
            seeds = [r["seed"] for r in rs if r["seed"] in {p["seed"] for p in by[parent]}]
            pick = lambda rr, key: [r[key] for r in rr if r["seed"] in seeds]  # noqa: E731
            d_s = paired(pick(rs, "sampled"), pick(by[parent], "sampled"))
            d_g = paired(pick(rs, "greedy"), pick(by[parent], "greedy"))
            pairs[f"{row} - {parent}"] = {"sampled": d_s, "greedy": d_g}
            ci = f"[{d_s['low']:+.3f}, {d_s['high']:+.3f}]" if d_s["low"] is not None else "[one seed]"
            label = f"{table[row]['method']} - {table[parent]['method']}"
            print(f"{label:<48} {d_s['mean']:>+14.3f} {ci:>19} {_fmt(d_g['mean'], d_g['std']):>22}")
        for _, hi, lo, _ in CLAIMS:  # the claims' comparisons, seed-paired too
            if hi in by and lo in by and f"{hi} - {lo}" not in pairs:
                seeds = sorted({r["seed"] for r in by[hi]} & {r["seed"] for r in by[lo]})
                pick = lambda rr: [r["sampled"] for r in rr if r["seed"] in seeds]  # noqa: E731
                pairs[f"{hi} - {lo}"] = {"sampled": paired(pick(by[hi]), pick(by[lo]))}
        prm, prm_pairs = _prm_quality_summary(mine), _prm_pairs(mine)
        if prm:
            print("\nPRM quality on held-out questions (the prm stage's PRM, mean ± std over seeds):")
            for key, (m, sd) in prm.items():
                print(f"  {key:<34} {_fmt(m, sd)}")
            for what, d in prm_pairs.items():
                ci = f"[{d['low']:+.3f}, {d['high']:+.3f}]" if d["low"] is not None else "[one seed]"
                print(f"  best-of-8: {what}@8 - maj@8, seed-paired {d['mean']:+.3f} {ci}")
        for r in mine:
            if r["augment"]:
                a = r["augment"]
                print(f"augmentation ({r['method']}, seed {r['seed']}): {a['samples_in']} questions -> "
                      f"{a['samples_out']} samples, {a['variants_per_question']} variants per question {a['methods']}")
        claims = _claims(table, pairs) + _prm_claims(prm, prm_pairs)
        for c in claims:
            verdict = "HOLDS" if c["holds"] else "DOES NOT HOLD"
            if not c.get("established", True):
                verdict += " ON ONE SEED (not established)"
            print(f"{verdict}: {c['claim']} ({c['evidence']})")
        summary["tasks"][task] = {"rows": table, "paired": pairs, "claims": claims, "prm_quality": prm,
                                  "prm_paired": prm_pairs}
    return summary


def _prm_qualities(results: list[dict]) -> dict[int, dict]:
    """The trained PRM's held-out quality per seed: the sft_rl_prm row's PRM (the dense and +DA rows reuse it), another
    row's only where that row has none."""
    qs: dict[int, dict] = {}
    for r in sorted(results, key=lambda r: r["row"] != "sft_rl_prm"):
        if r["prm_quality"] and r["seed"] not in qs:
            qs[r["seed"]] = r["prm_quality"]
    return qs


def _prm_quality_summary(results: list[dict]) -> dict:
    """Step AUC (trained, constant, judge), first-error F1 and best-of-k of the trained PRMs, over seeds."""
    qs = _prm_qualities(results)
    if not qs:
        return {}
    out = {}
    for key in ("auc", "constant_auc", "judge_auc", "reply_auc", "reply_within_auc", "first_error_f1"):
        vals = [q[key] for q in qs.values() if q.get(key) is not None]
        if vals:
            out[key if key.startswith(("reply", "first")) else f"step {key}"] = mean_std(vals)
    for k in sorted({k for q in qs.values() for k in (q.get("best_of_k") or {})}, key=int):
        for what in ("rerank", "weighted_maj", "maj", "pass", "mean"):
            vals = [q["best_of_k"][k][what] for q in qs.values() if (q.get("best_of_k") or {}).get(k, {}).get(what)
                    is not None]
            if vals:
                out[f"best-of-{k}: {what}@{k}" if what != "mean" else f"best-of-{k}: single reply"] = mean_std(vals)
    return out


def _prm_pairs(results: list[dict], k: str = "8") -> dict[str, dict]:
    """Seed-paired differences of the PRM's pick (``rerank``) and PRM-weighted vote (``weighted_maj``) over
    ``maj@k``, on the seeds that measured both."""
    out = {}
    measured = [q["best_of_k"][k] for q in _prm_qualities(results).values()
                if (q.get("best_of_k") or {}).get(k, {}).get("maj") is not None]
    for what in ("rerank", "weighted_maj"):
        both = [b for b in measured if b.get(what) is not None]
        if both:
            out[what] = paired([b[what] for b in both], [b["maj"] for b in both])
    return out


def _prm_claims(prm: dict, pairs: dict[str, dict] | None = None) -> list[dict]:
    """The issue's PRM figures: step AUC >= 0.80 on held-out steps (the mean over seeds); best-of-8 >= maj@8 + 0.03
    (the PRM's pick, and the PRM-weighted vote where measured): the seed-paired mean gain >= 0.03 with its 95%
    interval above zero (a gain within the seeds' spread does not hold), or on one seed, not established."""
    out = []
    auc = prm.get("step auc", (None, None))
    if auc[0] is not None:
        out.append({"claim": "trained PRM step AUC >= 0.80 (held-out)", "holds": auc[0] >= 0.80,
                    "established": auc[1] is not None,
                    "evidence": f"AUC {auc[0]:.3f}" + (f" ± {auc[1]:.3f} over seeds" if auc[1] is not None else "")
                    + f", constant scorer {prm.get('step constant_auc', (None,))[0]}"})
    maj = prm.get("best-of-8: maj@8", (None,))[0]
    within = prm.get("reply_within_auc", (None,))[0]
    for what, claim, name in (("rerank", "best-of-8 with the PRM >= maj@8 + 0.03", "rerank@8"),
                              ("weighted_maj", "PRM-weighted vote of 8 >= maj@8 + 0.03", "weighted_maj@8")):
        value = prm.get(f"best-of-8: {name}", (None,))[0]
        if value is None or maj is None:
            continue
        d = (pairs or {}).get(what) or {}
        gain = d.get("mean", value - maj)
        holds = gain >= 0.03 and (d.get("low") is None or d["low"] > 0)
        evidence = (f"{name} {value:.3f} vs maj@8 {maj:.3f}, gain {gain:+.3f}"
                    + (f", paired 95% CI [{d['low']:+.3f}, {d['high']:+.3f}]" if d.get("low") is not None else "")
                    + ("" if what != "rerank" or within is None else f"; reply AUC within a question {within:.3f}"))
        out.append({"claim": claim, "holds": bool(holds), "established": d.get("low") is not None, "gain": gain,
                    "evidence": evidence})
    return out


def _gap_claim(claim: str, table: dict, pairs: dict, hi: str, lo: str, rel: float | None = None) -> dict:
    a, b = table[hi], table[lo]
    gap = a["sampled"] - b["sampled"]
    stds = [s for s in (a["sampled_seed_std"], b["sampled_seed_std"]) if s is not None]
    bar = 2 * max(stds) if stds else None
    d = pairs.get(f"{hi} - {lo}", {}).get("sampled") or {}
    need = b["sampled"] * (1 + rel) if rel is not None else b["sampled"]
    holds = a["sampled"] >= need if rel is not None else gap > 0
    # beyond 2x the seed std, and (with 2+ seeds) a seed-paired 95% interval above zero
    holds = holds and bar is not None and gap > bar and (d.get("low") is None or d["low"] > 0)
    evidence = (f"{a['sampled']:.3f} vs {b['sampled']:.3f}, gap {gap:+.3f}"
                + (f" = {gap / b['sampled']:+.1%} relative (needs {rel:+.0%})" if rel is not None and b["sampled"] else "")
                + (f", 2x seed std {bar:.3f}" if bar is not None else ", one seed: no seed std")
                + (f", paired 95% CI [{d['low']:+.3f}, {d['high']:+.3f}]" if d.get("low") is not None else ""))
    # a row measured on one training seed has no seed spread of its own: whatever it shows is not established
    established = len(a.get("seeds", [0, 1])) >= 2 and len(b.get("seeds", [0, 1])) >= 2
    return {"claim": claim, "holds": bool(holds), "established": established, "gap": gap, "two_seed_std": bar,
            "evidence": evidence}


#: (claim, row, the row it is compared with, relative gain needed or None for any gain)
CLAIMS = [("full method >= Vanilla+ICL + 30% relative, beyond 2x seed std", "sft_rl_prm_da_icl", "vanilla_icl",
           TARGET_GAIN),
          ("SFT+RL(PRM) > SFT+RL, beyond 2x seed std", "sft_rl_prm", "sft_rl", None),
          ("SFT > Vanilla+ICL (training beats the prompt)", "sft", "vanilla_icl", None),
          ("SFT+RL > SFT", "sft_rl", "sft", None),
          ("SFT+RL(PRM) > Vanilla+ICL", "sft_rl_prm", "vanilla_icl", None),
          ("dense PRM rewards > sparse", "sft_rl_prm_dense", "sft_rl_prm", None),
          ("+DA > SFT+RL(PRM)", "sft_rl_prm_da", "sft_rl_prm", None),
          ("+ICL > +DA", "sft_rl_prm_da_icl", "sft_rl_prm_da", None)]


def _claims(table: dict, pairs: dict) -> list[dict]:
    out = []
    for claim, hi, lo, rel in CLAIMS:
        if hi in table and lo in table:
            out.append(_gap_claim(claim, table, pairs, hi, lo, rel))
    return out


def plot_rewards(results: list[dict], path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [r for r in results if r["reward_curve"]]
    if not curves:
        return None
    tasks = sorted({r["task"] for r in curves})
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.0 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in dict.fromkeys(r["method"] for r in curves if r["task"] == task):
            runs = [r["reward_curve"] for r in curves if r["task"] == task and r["method"] == method]
            n = min(len(c) for c in runs)
            ys = [statistics.fmean(c[i] for c in runs) for i in range(n)]
            ax.plot(range(1, n + 1), ys, marker=".", label=f"{method} ({len(runs)} seeds)")
        ax.set_title(task)
        ax.set_xlabel("RL step")
        ax.set_ylabel("mean rollout reward (mean over seeds)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


#: peak resident memory of one (task, seed) unit on the bundled model: the full row's RL and SFT (kept freed memory)
GB_PER_UNIT = 11


def _available_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    return kb / 1024 ** 2


def run_units_side_by_side(units: list[tuple[str, int]], args: argparse.Namespace, runs_dir: Path) -> None:
    """Run each (task, seed) unit as its own invocation of this script, ``args.jobs`` at a time; each writes its
    rows into ``efficacy.partial.json`` under the lock as it finishes them. Fails if any unit failed."""
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (args.threads or os.cpu_count() or 1) // args.jobs)
    available = _available_gb()
    if available is not None and available < args.jobs * GB_PER_UNIT:
        print(f"warning: {available:.0f} GB of memory available for {args.jobs} units side by side; a unit can "
              f"hold ~{GB_PER_UNIT} GB (the full row's RL); one may be killed for memory (it resumes on a rerun)",
              file=sys.stderr)
    logs = runs_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def one(unit: tuple[str, int]) -> int:
        task, seed = unit
        cmd = [sys.executable, str(Path(__file__).resolve()), "--tasks", task, "--seeds", str(seed),
               "--rows", args.rows, "--runs-dir", str(runs_dir), "--threads", str(threads), "--jobs", "1"]
        cmd += [f"--set={o}" for o in args.overrides] + ["--quiet"] * args.quiet
        cmd += ["--judge", args.judge] if args.judge and seed == units[0][1] else []
        log = logs / f"{task}-seed{seed}.log"
        print(f"{task} seed {seed}: {threads} thread(s), log {log}", file=sys.stderr)
        with open(log, "a") as f:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ | {
                "OMP_NUM_THREADS": str(threads)}).returncode
        print(f"{task} seed {seed}: {'done' if code == 0 else f'FAILED (exit {code}), see {log}'}", file=sys.stderr)
        return code

    with ThreadPoolExecutor(args.jobs) as pool:
        failed = [u for u, code in zip(units, pool.map(one, units)) if code != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(units)} (task, seed) units failed: {failed}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated recipes of recipes/small ({', '.join(ROWS)})")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated bundled tasks")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="recipe override applied to every row (see 'openrft run --help')")
    ap.add_argument("--runs-dir", default="runs/efficacy")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="(task, seed) units run side by side, each in its own process with threads / jobs threads")
    ap.add_argument("--judge", metavar="SPEC",
                    help="also score the PRM rows' held-out steps with this PRM (prm.quality_judge, e.g. "
                         "judge:smollm2-135m), on the first seed only: a judge does not train, one seed shows how it "
                         "ranks the steps (scoring it on every seed took ~7.5 min per unit)")
    ap.add_argument("--progress", action="store_true", help="progress bars")
    ap.add_argument("--quiet", action="store_true", help="no per-stage lines")
    ap.add_argument("--summarize", action="store_true",
                    help="run nothing: print the tables of the rows finished so far (efficacy.partial.json)")
    args = ap.parse_args(argv)
    if args.summarize:
        results = json.loads((Path(args.runs_dir) / "efficacy.partial.json").read_text())
        _add_reply_aucs(results, Path(args.runs_dir))
        rows = [r for r in ROWS if any(x["row"] == r for x in results)]
        return summarize(results, rows, sorted({x["task"] for x in results}))
    from openrft.models.allocator import keep_freed_memory

    keep_freed_memory()  # what 'openrft run' does on CPU: freed memory stays in the process
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = [m.strip() for m in args.rows.split(",") if m.strip()]
    unknown = [m for m in rows if not (RECIPES / f"{m}.yaml").is_file()]
    if unknown:
        ap.error(f"no recipe recipes/small/{unknown[0]}.yaml")
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    runs_dir = Path(args.runs_dir)
    t0 = time.perf_counter()
    # rows finished by earlier invocations (other rows, other overrides) stay in the tables
    partial = runs_dir / "efficacy.partial.json"
    results = []
    units = [(task, seed) for seed in seeds for task in tasks]
    if args.jobs > 1 and len(units) > 1:
        run_units_side_by_side(units, args, runs_dir)
    else:
        for task, seed in units:
            # every sampled run of this task and seed is a reuse candidate, those of an earlier invocation too,
            # so rows can be added to a finished study without training its warm-ups again
            seed_dir = runs_dir / task / f"seed{seed}"
            done = sorted(d for d in seed_dir.iterdir() if d.is_dir() and not d.name.endswith("-greedy")) \
                if seed_dir.is_dir() else []
            for row in rows:
                overrides = args.overrides + ([f"prm.quality_judge={args.judge}"]
                                              if args.judge and seed == seeds[0] else [])
                info = run_row(row, task, seed, runs_dir, overrides, [d for d in done if d.name != row],
                               show_progress=args.progress, quiet=args.quiet)
                done.append(info["sampled_dir"])
                results.append(collect(info) | {"overrides": overrides})
                _save_partial(partial, results)
    earlier = json.loads(partial.read_text()) if partial.is_file() else []
    results = [r for r in _merge(earlier, results) if r["task"] in tasks]
    rows = [r for r in ROWS if any(x["row"] == r for x in results)]
    summary = summarize(results, rows, tasks)
    total = time.perf_counter() - t0
    print(f"\ntotal wall time {total / 60:.1f} min ({len(tasks)} tasks x {len(seeds)} seeds x {len(rows)} rows)")
    png = plot_rewards(results, runs_dir / "rewards.png")
    if png:
        print(f"reward curves: {png}")
    summary |= {"results": results, "total_seconds": total, "paper_relative_gain": PAPER_GAIN,
                "settings": {"rows": rows, "tasks": tasks, "seeds": seeds, "overrides": args.overrides,
                             "threads": args.threads, "jobs": args.jobs}}
    (runs_dir / "efficacy.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
