"""Fake run directories for the report tests (helpers; the fixtures are in conftest.py).

Written with the stages' own writers where practical:

Eval: the real ``evaluate()`` on scripted completions (optionally PRM-reranked) + ``write_report``.
RL: ``MetricsLog`` rows shaped like ``RLTrainer.step`` (reward parts from ``RewardBatch.summary``).
SFT: ``metrics.jsonl`` lines appended through ``JsonlStore`` as the SFT stage's callback does.
``run.json`` follows the contract of ``openrft run``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from openrft.data.loaders import save_samples
from openrft.data.sample import Sample
from openrft.evaluate.results import write_report
from openrft.evaluate.rerank import PRMReranker
from openrft.evaluate.runner import EvalConfig, EvalResult, evaluate
from openrft.models.backends.base import Completion, Generator
from openrft.core.rundir import JsonlStore, atomic_write_json
from openrft.rewards.base import RewardBatch
from openrft.rewards.prm.base import ProcessScorer


class ScriptedGenerator(Generator):
    """Fixed completions per question (found in the prompt's last message)."""

    def __init__(self, script: dict[str, list[str]]):
        self.script = script

    def generate(self, prompts, params, progress=None):
        out = []
        for p in prompts:
            q = next(q for q in self.script if q in p[-1]["content"])
            out.append([Completion(t, num_tokens=max(1, len(t.split()))) for t in self.script[q][:params.n]])
        return out


class ContainsScorer(ProcessScorer):
    """1.0 for a step containing 'ok', 0.2 for any other step."""

    name = "contains"

    def score_batch(self, questions, steps):
        return [[1.0 if "ok" in st else 0.2 for st in ss] for ss in steps]


@dataclass
class CellSpec:
    task: str  # the cell's task as run.json names it (here: a JSONL file of test samples)
    data_size: int | None
    script: dict[str, list[str]] | None  # question -> completions; None = not evaluated
    rl_steps: int = 0
    sft_steps: int = 0
    rerank: bool = False


def numeric_samples(task: str, questions_answers: list[tuple[str, str]]) -> list[Sample]:
    return [Sample(id=f"{task}/test/{i}", task=task, question=q, answer=a, answer_type="numeric")
            for i, (q, a) in enumerate(questions_answers)]


def write_samples(root: Path, task: str, samples: list[Sample]) -> str:
    return str(save_samples(samples, root / "data" / task / "test.jsonl"))


def write_eval(eval_dir: Path, samples: list[Sample], script: dict[str, list[str]], label: str,
               rerank: bool = False) -> EvalResult:
    reranker = PRMReranker(ContainsScorer(), agg="min", spec="prm:contains") if rerank else None
    result = evaluate(ScriptedGenerator(script), samples, EvalConfig(n=3, temperature=1.0, max_new_tokens=16),
                      eval_dir, label=label, model_name="tiny-model", show_progress=False, reranker=reranker)
    write_report([result], eval_dir)
    return result


def write_rl_metrics(rl_dir: Path, steps: int, with_prm: bool = True) -> list[dict]:
    from openrft.rl.logs import MetricsLog

    rl_dir.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(rl_dir, tensorboard=False)
    rows = []
    for step in range(steps):
        correct = [step % 2 == 0, True, step > 1, False]
        outcome = [1.0 if c else 0.0 for c in correct]
        parts = {"outcome": outcome, "correct": [float(c) for c in correct], "has_answer": [1.0, 1.0, 1.0, 0.0]}
        rewards = outcome
        if with_prm:
            process = [0.5 + 0.1 * step, 0.6, 0.4, 0.1]
            parts |= {"process": process, "n_steps": [3.0, 2.0, 4.0, 0.0], "no_steps": [0.0, 0.0, 0.0, 1.0]}
            rewards = [0.5 * o + 0.5 * p for o, p in zip(outcome, process)]
        rb = RewardBatch(rewards=rewards, outcome=outcome, correct=correct, steps=None, step_scores=None,
                         dense=False, parts=parts, alpha=0.5 if with_prm else 1.0)
        row = {"step": step + 1, "time/generation": 1.5, "time/scoring": 0.2, "tokens_per_s": 80.0,
               "response_length": 40.0 + 5 * step, "response_length_max": 64.0, "truncated": 0.0,
               "kl": 0.001 * step, "time/forward": 0.3, "policy/loss": -0.01, "policy/clipfrac": 0.0,
               "time/update": 0.4, "adv/mean": 0.0, "adv/std": 1.0,
               **{f"reward/{k}": v for k, v in rb.summary().items()},
               "reward": sum(rb.rewards) / len(rb.rewards), "accuracy": sum(rb.correct) / len(rb.correct),
               "lr": 1e-6, "time/step": 2.5}
        log.write(row)
        rows.append(row)
    log.close()
    return rows


def write_sft_metrics(sft_dir: Path, steps: int) -> list[tuple[int, float]]:
    store = JsonlStore(sft_dir / "metrics.jsonl", key="step")
    losses = []
    for step in range(1, steps + 1):
        loss = 2.0 / step
        store.append([{"step": step, "loss": loss, "grad_norm": 1.0, "learning_rate": 5e-5, "epoch": step / steps}])
        losses.append((step, loss))
    return losses


def make_run(root: Path, name: str, method: str, cells: list[tuple[str, CellSpec, list[Sample]]],
             status: str = "finished", stages=("sft", "rl", "eval"), format_version: int = 1) -> Path:
    """A run directory: one cell per (cell id, spec, test samples)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    cell_entries = []
    for cid, spec, samples in cells:
        cdir = run_dir / cid
        st = {}
        if spec.sft_steps:
            write_sft_metrics(cdir / "sft", spec.sft_steps)
            st["sft"] = {"status": "finished", "seconds": 61.5}
        if spec.rl_steps:
            write_rl_metrics(cdir / "rl", spec.rl_steps)
            st["rl"] = {"status": "finished", "seconds": 3725.0}
        if spec.script is not None:
            write_eval(cdir / "eval", samples, spec.script, method, rerank=spec.rerank)
            st["eval"] = {"status": "finished", "seconds": 4.25}
        else:
            st["eval"] = {"status": "failed", "seconds": 0.5}
        cell_entries.append({"id": cid, "task": spec.task, "data_size": spec.data_size, "dir": cid, "stages": st})
    atomic_write_json(run_dir / "run.json", {
        "format_version": format_version, "openrft_version": "0.1.0", "name": name, "method": method,
        "recipe": "recipes/small/sft_rl_prm.yaml", "status": status, "stages": list(stages), "cells": cell_entries})
    (run_dir / "recipe.yaml").write_text(f"name: {name}\nmethod: {method}\ntest_split: test\n", encoding="utf-8")
    return run_dir


Q_SCRIPT = "<script>alert('x')</script> What is 2 + 5?"
SUM = [(Q_SCRIPT, "7"), ("What is 3 + 3?", "6")]
SUM_SCRIPT = {Q_SCRIPT: ["2 + 5 = 7 ok\nSo \\boxed{7}.", "2 + 5 = 8\n\\boxed{8}", "\\boxed{7} ok"],
              "What is 3 + 3?": ["3 + 3 = 6\n\\boxed{6}", "\\boxed{5}", "3 + 3 = 5\nso \\boxed{5}"]}
PROD = [("What is 2 * 4?", "8"), ("What is 3 * 3?", "9")]
PROD_SCRIPT = {"What is 2 * 4?": ["\\boxed{8}", "\\boxed{8}", "\\boxed{6}"],
               "What is 3 * 3?": ["\\boxed{9}", "\\boxed{9}", "\\boxed{9}"]}


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
