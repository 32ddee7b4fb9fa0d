"""PNG plots of a run (matplotlib, object API with the Agg canvas: no pyplot state, no backend switch).

matplotlib is imported inside each function; :func:`have_matplotlib` tells the report whether
plots can be drawn at all. Each plot is written atomically (rendered in memory, then renamed).
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from openrft.core.rundir import atomic_write_bytes

__all__ = ["REWARD_PART_SKIP", "accuracy_vs_size", "have_matplotlib", "prm_quality", "reward_parts", "rl_curves",
           "safe_name", "sft_loss", "task_bars"]

#: reward parts in metrics.jsonl that are counts or flags, not rewards: left out of the reward plot
REWARD_PART_SKIP = ("reward", "correct", "has_answer", "n_steps", "no_steps")
_PART_RE = re.compile(r"^reward/(.+)/mean$")


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def safe_name(text: str) -> str:
    """A file-name-safe form of a cell id.

    >>> safe_name("sciknoweval/chemical_calculation@25")
    'sciknoweval_chemical_calculation_25'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "cell"


def reward_parts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of the reward parts logged as ``reward/<part>/mean`` (outcome, process, fn/<name>), in first-seen order.

    >>> reward_parts([{"reward/reward/mean": 1, "reward/outcome/mean": 1, "reward/correct/mean": 1,
    ...                "reward/fn/fmt/mean": 0, "reward/fn/fmt/applies/mean": 1}])
    ['outcome', 'fn/fmt']
    """
    parts: list[str] = []
    for row in rows:
        for key in row:
            m = _PART_RE.match(key)
            if m and m.group(1) not in REWARD_PART_SKIP and not m.group(1).endswith("/applies") \
                    and m.group(1) not in parts:
                parts.append(m.group(1))
    return parts


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(rows):
        v = row.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(float(row.get("step", i + 1)))
            ys.append(float(v))
    return xs, ys


def _curve(ax, rows, key: str, label: str | None = None) -> bool:
    xs, ys = _series(rows, key)
    if xs:
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label or key)
    return bool(xs)


def _integer_steps(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _not_logged(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"{what}: not logged", ha="center", va="center", transform=ax.transAxes, color="gray")


def rl_curves(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str) -> Path:
    """2x2 panel from ``rl/metrics.jsonl`` rows: reward (total and parts), KL, response length, accuracy per step."""
    fig = _figure(10, 7)
    fig.suptitle(title)
    (ax_r, ax_kl), (ax_len, ax_acc) = fig.subplots(2, 2, sharex=True)
    if _curve(ax_r, rows, "reward", "reward (total)"):
        for part in reward_parts(rows):
            _curve(ax_r, rows, f"reward/{part}/mean", part)
        ax_r.legend(fontsize="small")
    else:
        _not_logged(ax_r, "reward")
    ax_r.set_title("reward")
    if not _curve(ax_kl, rows, "kl"):
        _not_logged(ax_kl, "KL")
    ax_kl.set_title("KL to the reference policy")
    if not _curve(ax_len, rows, "response_length", "mean"):
        _not_logged(ax_len, "response length")
    elif _curve(ax_len, rows, "response_length_max", "max"):
        ax_len.legend(fontsize="small")
    ax_len.set_title("response length (tokens)")
    if not _curve(ax_acc, rows, "accuracy"):
        _not_logged(ax_acc, "accuracy")
    ax_acc.set_title("rollout accuracy")
    ax_acc.set_ylim(-0.02, 1.02)
    for ax in (ax_len, ax_acc):
        ax.set_xlabel("RL step")
    for ax in (ax_r, ax_kl, ax_len, ax_acc):
        ax.grid(alpha=0.3)
        _integer_steps(ax)
    return _save(fig, path)


def sft_loss(losses: Sequence[tuple[int, float]], path: str | os.PathLike, title: str) -> Path:
    """Training loss per logging step of the SFT stage."""
    fig = _figure(6, 3.6)
    ax = fig.subplots()
    ax.plot([s for s, _ in losses], [v for _, v in losses], marker="o" if len(losses) < 30 else None, markersize=3)
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    _integer_steps(ax)
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def task_bars(series: Mapping[str, Mapping[str, tuple[float, float]]], path: str | os.PathLike,
              title: str = "accuracy per task") -> Path:
    """Grouped bars: one group per task, one bar per series (e.g. per data size); error bars = std over runs.

    ``series`` maps a series label to ``{task: (mean, std)}``.
    """
    tasks = list(dict.fromkeys(t for per in series.values() for t in per))
    fig = _figure(max(6.0, 1.1 * len(tasks) + 2), 4.2)
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    for j, (label, per) in enumerate(series.items()):
        xs = [i + (j - (len(series) - 1) / 2) * width for i, t in enumerate(tasks) if t in per]
        ax.bar(xs, [per[t][0] for t in tasks if t in per], width, yerr=[per[t][1] for t in tasks if t in per],
               capsize=3, label=label)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (mean over sampled runs)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize="small")
    return _save(fig, path)


def accuracy_vs_size(sizes: Sequence[int], curves: Mapping[str, Sequence[tuple[float, float] | None]],
                     path: str | os.PathLike, title: str = "accuracy vs number of training samples") -> Path:
    """Accuracy against training-set size (OpenRFT Figure 3): one line per task (and Avg); ``None`` = no value."""
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    for label, points in curves.items():
        xs = [s for s, p in zip(sizes, points) if p is not None]
        means = [p[0] for p in points if p is not None]
        stds = [p[1] for p in points if p is not None]
        style = {"linewidth": 2.5, "color": "black"} if label == "Avg" else {}
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label, **style)
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training samples")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def prm_quality(quality: Mapping[str, Any], path: str | os.PathLike, title: str) -> Path:
    """The prm stage's ``quality.json``: step AUC per scorer (left), best-of-k accuracy against k (right)."""
    scorers = quality["scorers"]
    fig = _figure(9.0, 3.8)
    left, right = fig.subplots(1, 2)
    names = list(scorers)
    aucs = [(scorers[n].get("steps") or {}).get("auc") for n in names]
    left.bar(range(len(names)), [a if a is not None else 0.0 for a in aucs], color="tab:blue")
    left.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    left.set_xticks(range(len(names)), names)
    left.set_ylim(0, 1)
    left.set_ylabel("step AUC (held-out)")
    left.set_title("step-level AUC")
    per_k = (scorers.get("trained", {}).get("best_of_k") or {}).get("k", {})
    ks = sorted(per_k, key=int)
    if ks:
        for what, style in (("rerank", "o-"), ("weighted_maj", "D-"), ("maj", "s--"), ("pass", "^:"),
                            ("mean", "x-.")):
            if any(per_k[k].get(what) is None for k in ks):
                continue  # weighted_maj: not in quality records written before it was measured
            right.plot([int(k) for k in ks], [per_k[k][what] for k in ks], style,
                       label={"mean": "one reply (mean)", "weighted_maj": "PRM-weighted vote@k"}.get(what, f"{what}@k"))
        right.set_xticks([int(k) for k in ks])
        right.legend(fontsize="small")
    else:
        _not_logged(right, "best-of-k")
    right.set_xlabel("k (replies per question)")
    right.set_ylabel("accuracy")
    right.set_ylim(0, 1)
    right.set_title("best-of-k with the trained PRM")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)
