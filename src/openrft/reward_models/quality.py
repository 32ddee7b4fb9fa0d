"""How good is a process reward model? Step-level, first-error and best-of-k measures on labelled solutions.

Inputs are solutions labelled the way the ``prm`` stage labels its training data (Math-Shepherd: a step's label
is the fraction of continuations from it that reach the gold answer; the last step's label is the solution's
own grade) and the scores a PRM gives the same steps. A step counts as *good* when its label is above 0 (some
continuation from it still reached the answer: Math-Shepherd's hard estimate), *bad* otherwise.

* :func:`step_quality`: AUC of the scores against good/bad steps (threshold-free; 0.5 = no signal), and the
  accuracy of ``score >= threshold``.
* :func:`first_error_quality`: ProcessBench-style. Per solution, the labelled first bad step (or none) against
  the first step the PRM scores below ``threshold`` (or none); accuracy on solutions with an error, accuracy on
  error-free solutions, and their harmonic mean (F1).
* :func:`reply_quality`: AUC of a reply's aggregated score against its grade, over all replies and within each
  question (over the questions with right and wrong replies). Reranking needs the second: a PRM that only
  learned which questions are hard ranks pooled replies well and one question's replies no better than chance.
* :func:`best_of_k_quality`: per question, pick the completion with the highest aggregated PRM score among the
  first k (rerank@k), the answer whose completions' aggregated scores sum highest (PRM-weighted voting,
  weighted_maj@k, Math-Shepherd's "self-consistency + PRM"), next to majority voting (maj@k), any-correct
  (pass@k) and the mean single-sample accuracy.

>>> step_quality([[0.9, 0.2], [0.8, 0.7]], [[1.0, 0.0], [0.5, 1.0]])["auc"]
1.0
>>> first_error_quality([[0.9, 0.2], [0.8, 0.7]], [[1.0, 0.0], [0.5, 1.0]])["f1"]
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from openrft.data.sample import Sample
from openrft.core.metrics import maj_at_k, pass_at_k, rerank_at_k, weighted_maj_at_k
from openrft.rewards.combine import aggregate_steps

__all__ = ["QUALITY_DIR", "QUALITY_FILE", "QUALITY_MEASURES", "HeldOutReplies", "best_of_k_quality", "first_error",
           "first_error_quality", "held_out_replies", "reply_quality", "score_replies", "step_quality"]

#: where the prm stage writes its held-out measures, relative to the stage directory (the run report reads it)
QUALITY_DIR, QUALITY_FILE = "quality", "quality.json"
#: the version of the measures in quality.json: a record of an older version is measured again (from its stored
#: reply scores when the PRM, judge and labels are the same)
QUALITY_MEASURES = 3


def _auc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    from openrft.reward_models.value_head_train import auc_score

    return auc_score(list(scores), [1 if p else 0 for p in positive])


def _check(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[float]]) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scored solutions for {len(labels)} labelled ones")
    for i, (s, y) in enumerate(zip(scores, labels)):
        if len(s) != len(y):
            raise ValueError(f"solution {i}: {len(s)} scores for {len(y)} labelled steps")


def step_quality(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[float]],
                 threshold: float = 0.5) -> dict[str, Any]:
    """AUC and accuracy of step scores against good (label > 0) / bad steps, over every step of every solution."""
    _check(scores, labels)
    flat_s = [float(x) for s in scores for x in s]
    good = [y > 0 for ys in labels for y in ys]
    if not flat_s:
        return {"steps": 0, "auc": None, "accuracy": None, "good_fraction": None, "threshold": threshold}
    correct = sum((s >= threshold) == g for s, g in zip(flat_s, good))
    return {"steps": len(flat_s), "auc": _auc(flat_s, good), "accuracy": correct / len(flat_s),
            "good_fraction": sum(good) / len(good), "threshold": threshold,
            "mean_score_good": _mean([s for s, g in zip(flat_s, good) if g]),
            "mean_score_bad": _mean([s for s, g in zip(flat_s, good) if not g])}


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def first_error(values: Sequence[float], bad: Callable[[float], bool]) -> int | None:
    """Index of the first value for which ``bad(value)`` holds, or None.

    >>> first_error([1.0, 0.5, 0.0, 0.0], lambda y: y <= 0)
    2
    """
    for i, v in enumerate(values):
        if bad(v):
            return i
    return None


def first_error_quality(scores: Sequence[Sequence[float]], labels: Sequence[Sequence[float]],
                        threshold: float = 0.5) -> dict[str, Any]:
    """Does the PRM find the first bad step? ProcessBench's accuracies on erroneous and error-free solutions, F1."""
    _check(scores, labels)
    hits_err = n_err = hits_ok = n_ok = 0
    for s, y in zip(scores, labels):
        if not y:
            continue
        truth = first_error(y, lambda v: v <= 0)
        pred = first_error(s, lambda v: v < threshold)
        if truth is None:
            n_ok += 1
            hits_ok += pred is None
        else:
            n_err += 1
            hits_err += pred == truth
    acc_err = hits_err / n_err if n_err else None
    acc_ok = hits_ok / n_ok if n_ok else None
    f1 = (2 * acc_err * acc_ok / (acc_err + acc_ok) if acc_err is not None and acc_ok is not None
          and acc_err + acc_ok > 0 else (0.0 if acc_err is not None and acc_ok is not None else None))
    return {"erroneous": n_err, "error_free": n_ok, "accuracy_erroneous": acc_err, "accuracy_error_free": acc_ok,
            "f1": f1, "threshold": threshold}


def reply_quality(step_scores: Sequence[Sequence[Sequence[float]]], correct: Sequence[Sequence[bool]],
                  agg: str = "min") -> dict[str, Any]:
    """Reply-level AUC (``step_scores[q][c]`` aggregated with ``agg``; a reply without steps scores 0): pooled over
    every reply, and the mean within-question AUC over the questions that have both right and wrong replies.

    >>> r = reply_quality([[[0.9], [0.8]], [[0.3], [0.2]]], [[True, False], [True, False]])
    >>> round(r["auc"], 2), r["within_question_auc"], r["mixed_questions"]
    (0.75, 1.0, 2)
    """
    if len(step_scores) != len(correct):
        raise ValueError("step_scores and correct need one entry per question")
    scores = [[aggregate_steps(list(s), agg) if s else 0.0 for s in q] for q in step_scores]
    for i, (s, c) in enumerate(zip(scores, correct)):
        if len(s) != len(c):
            raise ValueError(f"question {i}: {len(s)} scored replies for {len(c)} graded ones")
    within = [_auc(s, c) for s, c in zip(scores, correct) if any(c) and not all(c)]
    return {"agg": agg, "replies": sum(len(c) for c in correct),
            "auc": _auc([x for s in scores for x in s], [y for c in correct for y in c]),
            "within_question_auc": _mean(within), "mixed_questions": len(within)}


def best_of_k_quality(step_scores: Sequence[Sequence[Sequence[float]]], correct: Sequence[Sequence[bool]],
                      answers: Sequence[Sequence[str | None]], ks: Sequence[int], agg: str = "min") -> dict[str, Any]:
    """Per question (``step_scores[q][c]``: the step scores of completion ``c``; a completion without steps
    scores 0, the worst), rerank@k and weighted_maj@k with ``agg`` over the steps, maj@k, pass@k and mean
    accuracy, for each k."""
    if not (len(step_scores) == len(correct) == len(answers)):
        raise ValueError("step_scores, correct and answers need one entry per question")
    scores = [[aggregate_steps(list(s), agg) if s else 0.0 for s in q] for q in step_scores]
    out: dict[str, Any] = {"questions": len(scores), "agg": agg, "k": {}}
    n = min((len(c) for c in correct), default=0)
    for k in ks:
        if k > n:
            raise ValueError(f"best-of-{k} needs {k} completions per question; the fewest a question has is {n}")
        first = [list(c[:k]) for c in correct]
        out["k"][str(k)] = {"rerank": rerank_at_k(scores, correct, k),
                            "weighted_maj": weighted_maj_at_k(answers, scores, correct, k),
                            "maj": maj_at_k(answers, correct, k),
                            "pass": pass_at_k(correct, k),
                            "mean": sum(sum(c) / len(c) for c in first) / len(first) if first else None}
    return out


@dataclass
class HeldOutReplies:
    """The replies to held-out questions, ready to score: ``steps[q][r]`` the step texts of reply ``r`` of question
    ``q``, ``correct``/``answers`` its grade, ``questions`` as the task renders them (what a PRM reads)."""

    questions: list[str]
    steps: list[list[list[str]]]
    correct: list[list[bool]]
    answers: list[list[str | None]]


def held_out_replies(samples: Sequence[Sample], texts: Sequence[Sequence[str]],
                     step_rule: str = "newline") -> HeldOutReplies:
    """Split ``texts[q]`` (the replies to ``samples[q]``) into steps and grade them with the sample's task."""
    from openrft.rewards.steps import split_steps
    from openrft.tasks import grade_all, task_for

    grades = [grade_all([s] * len(reps), list(reps)) for s, reps in zip(samples, texts, strict=True)]
    return HeldOutReplies([task_for(s).render_question(s) for s in samples],
                          [[[st.text for st in split_steps(t, step_rule)] for t in reps] for reps in texts],
                          [[g.correct for g in gs] for gs in grades], [[g.extracted for g in gs] for gs in grades])


def score_replies(scorer, replies: HeldOutReplies) -> list[list[list[float]]]:
    """Every reply scored once by ``scorer`` (a :class:`~openrft.rewards.prm.base.ProcessScorer`), in one batched
    call: ``[question][reply]`` -> step scores, ``[]`` for a reply without steps."""
    flat = [(i, j) for i, reps in enumerate(replies.steps) for j, st in enumerate(reps) if st]
    got = scorer.score_batch([replies.questions[i] for i, _ in flat], [replies.steps[i][j] for i, j in flat]) \
        if flat else []
    per_question: list[list[list[float]]] = [[[] for _ in reps] for reps in replies.steps]
    for (i, j), sc in zip(flat, got, strict=True):
        per_question[i][j] = [float(x) for x in sc]
    return per_question
