"""Evaluation: n sampled runs per item, accuracy, maj@k, pass@k, best-of-k reranking, reports.

Nothing here imports torch; a PRM or ORM reranker loads its model when it is first needed
(:func:`~openrft.evaluate.rerank.load_reranker`).
"""

from openrft.core.metrics import (
    answered_rate, best_of_k, maj_at_k, majority_vote, pass_at_k, rerank_at_k, run_accuracy, weighted_maj_at_k,
    weighted_vote,
)
from openrft.evaluate.rerank import ORMReranker, PRMReranker, Reranker, Scored, load_reranker
from openrft.evaluate.runner import EvalConfig, EvalResult, TaskMetrics, evaluate

__all__ = [
    "EvalConfig",
    "EvalResult",
    "ORMReranker",
    "PRMReranker",
    "Reranker",
    "Scored",
    "TaskMetrics",
    "answered_rate",
    "best_of_k",
    "evaluate",
    "load_reranker",
    "maj_at_k",
    "majority_vote",
    "pass_at_k",
    "rerank_at_k",
    "run_accuracy",
    "weighted_maj_at_k",
    "weighted_vote",
]
