"""Tables and text of a run report: stage wall times, accuracy (OpenRFT Table 1 layout), example completions.

Accuracy tables reuse :mod:`openrft.evaluate.results`; a run's cells are merged into one
:class:`EvalResult` per training-set size, so tasks become columns as in Table 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from openrft.evaluate.results import accuracy_table, detail_table
from openrft.evaluate.runner import EvalResult
from openrft.report.document import Block, Code, Heading, Para, Table
from openrft.report.run import Cell, Run

__all__ = ["accuracy_blocks", "example_blocks", "fmt_seconds", "merge_results", "pick_examples", "prm_quality_blocks",
           "row_label", "results_by_size", "stage_time_table"]

MAX_COMPLETION_CHARS = 4000


def fmt_seconds(seconds: float | None) -> str:
    """Wall time for a table cell.

    >>> [fmt_seconds(s) for s in (None, 4.25, 125, 3725)]
    ['-', '4.2 s', '2 min 5 s', '1 h 2 min']
    """
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def stage_time_table(run: Run) -> tuple[list[str], list[list[str]]]:
    """One row per cell, one column per stage of the recipe (wall time and status), then the total."""
    stages = list(run.stages) + [s for c in run.cells for s in c.stages if s not in run.stages]
    stages = list(dict.fromkeys(stages))
    header = ["Cell", "Task", "Data size", *stages, "Total"]
    rows = []
    for c in run.cells:
        cells, total = [], 0.0
        for s in stages:
            info = c.stages.get(s)
            if info is None:
                cells.append("-")
                continue
            total += info.seconds or 0.0
            cells.append(fmt_seconds(info.seconds) if info.status == "finished"
                         else f"{info.status}" + (f" ({fmt_seconds(info.seconds)})" if info.seconds else ""))
        rows.append([c.id, c.task, "all" if c.data_size is None else str(c.data_size), *cells, fmt_seconds(total)])
    return header, rows


def merge_results(cells: Sequence[Cell], label: str, notes: list[str] | None = None) -> EvalResult | None:
    """The first evaluation result of each evaluated cell joined into one result (tasks side by side).

    A task already taken from an earlier cell is skipped (and noted); None when no cell is evaluated.
    """
    notes = notes if notes is not None else []
    evaluated = [c for c in cells if c.evaluated]
    if not evaluated:
        return None
    first = evaluated[0].eval_results[0]
    tasks, seen, tokens, seconds = [], {}, 0, 0.0
    for c in evaluated:
        if len(c.eval_results) > 1:
            notes.append(f"cell {c.id}: eval/report.json holds {len(c.eval_results)} results; the first "
                         f"({c.eval_results[0].label}) is used")
        r = c.eval_results[0]
        tokens += r.tokens
        seconds += r.seconds
        for t in r.tasks:
            if t.task in seen:
                notes.append(f"cell {c.id}: task {t.task} already comes from cell {seen[t.task]}; skipped")
                continue
            seen[t.task] = c.id
            tasks.append(t)
    return replace(first, label=label, tasks=tasks, tokens=tokens, seconds=seconds, records=[])


def row_label(method: str, data_size: int | None, several_sizes: bool) -> str:
    """Row label of a method at a training-set size: the size is named only when several are shown.

    >>> row_label("SFT", 25, True), row_label("SFT", 25, False), row_label("SFT", None, True)
    ('SFT (n=25)', 'SFT', 'SFT (n=all)')
    """
    if not several_sizes:
        return method
    return f"{method} (n={'all' if data_size is None else data_size})"


def results_by_size(run: Run, notes: list[str]) -> list[tuple[int | None, EvalResult]]:
    """One merged result per training-set size of the run (sizes without any evaluated cell left out)."""
    sizes = run.data_sizes
    out = []
    for size in sizes:
        merged = merge_results([c for c in run.cells if c.data_size == size],
                               row_label(run.method, size, len(sizes) > 1), notes)
        if merged is not None:
            out.append((size, merged))
    return out


def accuracy_blocks(results: Sequence[EvalResult], not_evaluated: Sequence[Cell]) -> list[Block]:
    """Table 1 (mean ± std over sampled runs, rerank@k rows) and each row's details (maj@k, pass@k, rerank@k)."""
    blocks: list[Block] = [Heading(2, "Accuracy")]
    if results:
        blocks += [Para("Mean accuracy over sampled runs (± std over runs when there are several); tasks as "
                        "columns, Avg = macro mean over tasks (OpenRFT Table 1 layout)."
                        + (" * marks the best value of each column." if len(results) > 1 else "")),
                   Table(*accuracy_table(results))]
        columns = {t.task for r in results for t in r.tasks}
        blocks += [Para(f"{r.label}: Avg covers {len(r.tasks)} of {len(columns)} tasks (the others are not "
                        "evaluated).") for r in results if len(r.tasks) < len(columns)]
        for r in results:
            cfg = r.config
            setting = ", ".join(f"{k}={cfg[k]}" for k in ("n", "temperature", "max_new_tokens") if k in cfg)
            blocks += [Heading(3, f"{r.label}: {r.model}" if r.model else r.label),
                       Para(f"{setting}{'; reranked by ' + cfg['rerank'] if cfg.get('rerank') else ''}; "
                            f"{r.tokens} tokens generated in {r.seconds:.1f} s"),
                       Table(*detail_table(r))]
    else:
        blocks.append(Para("No cell of this run has been evaluated yet."))
    if not_evaluated:
        blocks += [Heading(3, "Not evaluated"), Table(["Cell", "Task", "Why"],
                                                     [[c.id, c.task, c.eval_note or ""] for c in not_evaluated])]
    return blocks


def pick_examples(cells: Sequence[Cell], count: int) -> list[tuple[Cell, dict[str, Any]]]:
    """Up to ``count`` graded items, taken round-robin over the evaluated cells (so each task is shown)."""
    pools = [(c, c.completions()) for c in cells if c.evaluated]
    out: list[tuple[Cell, dict[str, Any]]] = []
    i = 0
    while len(out) < count and any(i < len(recs) for _, recs in pools):
        for c, recs in pools:
            if i < len(recs) and len(out) < count:
                out.append((c, recs[i]))
        i += 1
    return out


def _steps_table(sample: dict[str, Any], record: dict[str, Any]) -> Table | None:
    scores = sample.get("step_scores")
    if not isinstance(scores, list) or not scores:
        return None
    rule = (record.get("rerank") or {}).get("step_rule") or "newline"
    texts: list[str] = []
    try:
        from openrft.rewards.steps import split_steps

        texts = [s.text for s in split_steps(sample.get("text", ""), rule)]
    except ValueError:
        pass
    if len(texts) != len(scores):
        texts = [""] * len(scores)  # the step rule does not reproduce the stored steps: show the scores alone
    rows = [[str(i + 1), f"{float(sc):.3f}", (t if len(t) <= 120 else t[:117] + "...")]
            for i, (sc, t) in enumerate(zip(scores, texts))]
    return Table(["Step", "PRM score", "Step text"], rows)


def example_blocks(examples: Sequence[tuple[Cell, dict[str, Any]]],
                   question_for: Callable[[Cell, dict[str, Any]], str | None]) -> list[Block]:
    """Question, first sampled completion, its grade and (when stored) its PRM step scores, per example."""
    blocks: list[Block] = [Heading(2, "Example completions")]
    if not examples:
        return blocks + [Para("No completions stored (eval/completions.jsonl missing or empty).")]
    for i, (cell, rec) in enumerate(examples, 1):
        samples = rec.get("samples") or []
        if not samples:
            continue
        s = samples[0]
        verdict = "correct" if s.get("correct") else "wrong"
        blocks.append(Heading(3, f"Example {i}: {rec.get('id')} (cell {cell.id})"))
        facts = f"sample 1 of {len(samples)}: {verdict}; extracted answer: {s.get('extracted')!s}; " \
                f"gold: {rec.get('gold')!s}; {s.get('num_tokens', '?')} tokens, finish: {s.get('finish_reason', '?')}"
        if isinstance(s.get("score"), (int, float)):
            facts += f"; reranker score {float(s['score']):.3f} ({(rec.get('rerank') or {}).get('spec', '?')})"
        blocks.append(Para(facts))
        question = question_for(cell, rec)
        blocks.append(Code(question, "Question") if question is not None
                      else Para(f"Question: not stored in completions.jsonl and not found in the test split of "
                                f"{cell.task}."))
        text = str(s.get("text", ""))
        if len(text) > MAX_COMPLETION_CHARS:
            text = text[:MAX_COMPLETION_CHARS] + f"\n... [{len(text) - MAX_COMPLETION_CHARS} more characters]"
        blocks.append(Code(text, "Completion"))
        steps = _steps_table(s, rec)
        if steps is not None:
            blocks.append(steps)
    return blocks


def _num(value: Any, digits: int = 3) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.{digits}f}"


#: the best-of-k measures of a PRM quality record, and their column names
_BOK = ("rerank", "weighted_maj", "maj", "pass")
_BOK_NAMES = {"rerank": "rerank", "weighted_maj": "wmaj", "maj": "maj", "pass": "pass"}


def prm_quality_blocks(cells: Sequence[Cell]) -> list[Block]:
    """The prm stage's held-out measures per cell: step AUC / accuracy, first-error detection, best-of-k.

    One row per scorer (the trained PRM, a constant scorer, and the judge when the recipe named one)."""
    blocks: list[Block] = []
    for cell in cells:
        q = cell.prm_quality()
        if q is None:
            continue
        if not blocks:
            blocks = [Heading(2, "PRM quality"),
                      Para("The prm stage's PRM on held-out questions whose replies were labelled like its training "
                           "data (Math-Shepherd: a step is good when some continuation from it reaches the gold "
                           "answer). step AUC: 0.5 = no signal; reply AUC in a question: the min step score of a "
                           "question's right replies against its wrong ones, averaged over the questions that have "
                           "both (what reranking needs); first-error F1: ProcessBench's harmonic mean of "
                           "finding the first bad step and passing error-free replies (threshold 0.5); best-of-k: "
                           "the reply with the highest min step score among the first k (rerank@k), the answer whose "
                           "replies' min step scores sum highest (PRM-weighted voting, wmaj@k), next to majority "
                           "voting (maj@k), any-correct (pass@k) and the mean single-reply accuracy.")]
        ks = sorted({k for sc in q["scorers"].values() for k in (sc.get("best_of_k") or {}).get("k", {})}, key=int)
        header = ["Scorer", "step AUC", "step acc", "reply AUC in a question", "first-error F1"] + \
            [f"{_BOK_NAMES[what]}@{k}" for k in ks for what in _BOK]
        rows = []
        for name, sc in q["scorers"].items():
            steps, fe = sc.get("steps") or {}, sc.get("first_error") or {}
            per_k = (sc.get("best_of_k") or {}).get("k", {})
            within = (sc.get("replies") or {}).get("within_question_auc")
            rows.append([name, _num(steps.get("auc")), _num(steps.get("accuracy")), _num(within), _num(fe.get("f1"))]
                        + [_num((per_k.get(k) or {}).get(what)) for k in ks for what in _BOK])
        trained = q["scorers"].get("trained", {}).get("steps", {})
        blocks += [Heading(3, f"cell {cell.id}"),
                   Para(f"{q.get('questions')} held-out questions, {q.get('labelled_solutions')} labelled replies, "
                        f"{trained.get('steps')} steps ({_num(trained.get('good_fraction'), 2)} of them good)."),
                   Table(header, rows)]
    return blocks
