"""The reward contract of the RL stage: outcome (the task's grader) + process (a PRM) + user functions.

Non-dense: ``reward = alpha * outcome + (1 - alpha) * f(step scores) + sum(w_i * fn_i)``.
Dense: ``reward = alpha * outcome + sum(w_i * fn_i)`` at the last token, and each step's
``(1 - alpha) * score`` at the step's last token (:meth:`RewardBatch.step_rewards`).
Without a PRM the outcome has the full weight (``alpha`` is ignored).

Every part is kept per completion in :attr:`RewardBatch.parts` for logging.

>>> from openrft.data.sample import Sample
>>> s = Sample(id="q", task="t", question="2+3?", answer="5", answer_type="numeric")
>>> batch = CompositeReward(RewardSettings(partial_credit=0.1))([s, s], ["2+3=5\\nSo 5.", "So 7."])
>>> batch.rewards, batch.correct, batch.summary()["outcome/mean"]
([1.0, 0.1], [True, False], 0.55)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from openrft.data.sample import Sample
from openrft.rewards.combine import AGGREGATORS, aggregate_steps, check_agg, check_alpha
from openrft.rewards.functions import RewardFunction, call_reward_function, parse_function_spec
from openrft.rewards.outcome import OutcomeReward
from openrft.rewards.prm.base import ProcessScorer, check_scores
from openrft.rewards.steps import Step, step_rule
from openrft.tasks import task_for

__all__ = ["CompositeReward", "RewardBatch", "RewardSettings", "build_reward", "check_probabilities"]


@dataclass
class RewardSettings:
    """How the RL stage rewards a completion."""

    alpha: float = field(default=0.7, metadata={"help": "weight of the outcome reward when a PRM is set; 1.0 = outcome only"})
    agg: str = field(default="mean", metadata={"help": f"f over a completion's step scores: {'|'.join(AGGREGATORS)}"})
    dense: bool = field(default=False, metadata={
        "help": "dense mode: each step's (1-alpha)*score at the step's last token, alpha*outcome at the last token"})
    step_rule: str = field(default="newline", metadata={
        "help": "how a completion is split into steps: newline|blank_line|step_k|re:<separator regex>"})
    partial_credit: float = field(default=0.0, metadata={
        "help": "outcome reward of a wrong but extractable answer (ReFT: 0.1); 0 = plain 1/0"})
    prm: str | None = field(default=None, metadata={
        "help": "process scorer: checkpoint path (format auto-detected), judge:<model>, or http(s)://url; none = outcome only"})
    functions: list[str] = field(default_factory=list, metadata={
        "help": "extra trl-style reward functions 'module:fn' or 'path/to/file.py:fn', each optionally '...:fn@weight'"})
    prm_format: str | None = field(default=None, metadata={
        "help": "force the PRM checkpoint format (value_head|token_class|math_shepherd) instead of detecting it"})
    prm_device: str | None = field(default=None, metadata={"help": "device of a local PRM (default: cuda if available, else cpu)"})
    prm_dtype: str | None = field(default=None, metadata={
        "help": "dtype of a local PRM: auto|fp32|bf16|fp16 (default: the policy's)"})
    prm_batch_size: int = field(default=8, metadata={"help": "completions (judge: step prompts) per PRM forward pass"})
    score_answer_step: bool = field(default=True, metadata={
        "help": "the PRM also scores a completion's last step (its final-answer line); false leaves the answer to "
                "the outcome term and scores the reasoning steps only, as OpenRFT does (a one-step completion is "
                "still scored)"})

    def __post_init__(self) -> None:
        self.alpha = check_alpha(self.alpha)
        check_agg(self.agg)
        step_rule(self.step_rule)  # raises on an unknown rule or a bad regex
        if not 0.0 <= float(self.partial_credit) < 1.0:
            raise ValueError(f"partial_credit must be in [0, 1), got {self.partial_credit!r}")
        if isinstance(self.functions, str):
            self.functions = [self.functions]
        for spec in self.functions:
            parse_function_spec(spec)
        if self.prm_batch_size < 1:
            raise ValueError(f"prm_batch_size must be >= 1, got {self.prm_batch_size}")
        if self.prm is not None and not str(self.prm).strip():
            self.prm = None


def check_probabilities(scores: Sequence[float], n_steps: int, who: str) -> list[float]:
    """:func:`~openrft.rewards.prm.base.check_scores` plus the range: every score in [0, 1]."""
    out = check_scores(scores, n_steps, who)
    bad = [i for i, s in enumerate(out) if not 0.0 <= s <= 1.0]
    if bad:
        raise ValueError(f"{who} returned step score(s) outside [0, 1] at step(s) {bad}: {[out[i] for i in bad]}")
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


@dataclass
class RewardBatch:
    """Rewards of one batch of completions, with every part kept for logging.

    ``parts`` always has ``outcome``, ``correct`` (0/1) and ``has_answer`` (0/1); with a PRM
    also ``process`` (f over the step scores, 0.0 without steps), ``n_steps`` and ``no_steps``
    (0/1); each extra function ``fn/<name>`` (None counted as 0.0) and ``fn/<name>/applies`` (0/1).
    """

    rewards: list[float]
    outcome: list[float]
    correct: list[bool]
    steps: list[list[Step]] | None
    step_scores: list[list[float]] | None
    dense: bool
    parts: dict[str, list[float]]
    alpha: float = 1.0
    extracted: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rewards)

    def step_rewards(self) -> list[list[tuple[int, float]]]:
        """Dense mode: per completion, ``(end character offset of the step, (1 - alpha) * score)`` per step.

        Empty lists when there is no PRM or the batch is not dense (the process part is then
        already in :attr:`rewards`). Place each at the token holding character ``end - 1``.
        """
        if not self.dense or self.steps is None or self.step_scores is None:
            return [[] for _ in self.rewards]
        w = 1.0 - self.alpha
        return [[(st.end, w * sc) for st, sc in zip(steps, scores)] for steps, scores in zip(self.steps, self.step_scores)]

    def summary(self) -> dict[str, float]:
        """``<part>/mean`` and ``<part>/std`` of the reward and of every part, for ``metrics.jsonl``."""
        out: dict[str, float] = {}
        for name, values in {"reward": self.rewards, **self.parts}.items():
            out[f"{name}/mean"], out[f"{name}/std"] = _mean_std(values)
        return out

    def within_groups(self, groups: Sequence[int]) -> dict[str, float]:
        """How much each term of the reward varies within a prompt's group (what a group-relative advantage sees),
        for ``metrics.jsonl``: the mean over groups of the within-group std of the reward, of its outcome term
        (``alpha x outcome``) and, with a sparse PRM, of its process term (``(1 - alpha) x process``); and the
        share of groups whose outcome is the same for every sample (there only the process term moves the
        advantages). Dense rewards place the process term on the steps: it is left out here.

        >>> rb = RewardBatch([1.0, 0.2, 0.9, 0.8], [1.0, 0.0, 1.0, 1.0], [True, False, True, True], None, None,
        ...                  False, {"process": [1.0, 0.5, 0.6, 0.3]}, alpha=0.7)
        >>> {k: round(v, 3) for k, v in rb.within_groups([0, 0, 1, 1]).items()}
        {'reward/group_std': 0.225, 'outcome/group_std': 0.175, 'process/group_std': 0.06, 'groups/same_outcome': 0.5}
        """
        terms = {"reward": self.rewards, "outcome": [self.alpha * o for o in self.outcome]}
        if "process" in self.parts and not self.dense:
            terms["process"] = [(1.0 - self.alpha) * p for p in self.parts["process"]]
        members: dict[int, list[int]] = {}
        for i, g in enumerate(groups):
            members.setdefault(g, []).append(i)
        out = {f"{name}/group_std": statistics.fmean(statistics.pstdev([values[i] for i in rows])
                                                      for rows in members.values())
               for name, values in terms.items()}
        out["groups/same_outcome"] = statistics.fmean(
            float(len({self.outcome[i] for i in rows}) == 1) for rows in members.values())
        return out


def _as_function(f: RewardFunction | Callable | str) -> RewardFunction:
    if isinstance(f, RewardFunction):
        return f
    if isinstance(f, str):
        return RewardFunction.from_spec(f)
    if callable(f):
        return RewardFunction(name=getattr(f, "__name__", type(f).__name__), fn=f)
    raise TypeError(f"reward function {f!r}: expected a RewardFunction, a callable or a 'module:fn' spec")


class CompositeReward:
    """Outcome + process + extra functions, as configured by :class:`RewardSettings`.

    Args:
        config: the reward configuration.
        scorer: the process scorer; required when ``config.prm`` is set (:func:`build_reward`
            loads it). A scorer given without ``config.prm`` is used too.
        functions: extra reward functions (``RewardFunction``, callables or specs); default:
            loaded from ``config.functions``.
    """

    def __init__(
        self,
        config: RewardSettings,
        scorer: ProcessScorer | None = None,
        functions: Sequence[RewardFunction | Callable | str] | None = None,
    ):
        if config.prm is not None and scorer is None:
            raise ValueError(f"config.prm is {config.prm!r} but no scorer was given; use build_reward(config) to load it")
        self.config = config
        self.scorer = scorer
        self.outcome = OutcomeReward(config.partial_credit)
        self.split = step_rule(config.step_rule)
        fns = [_as_function(f) for f in (functions if functions is not None else config.functions)]
        seen: dict[str, int] = {}
        self.functions: list[RewardFunction] = []
        for f in fns:
            seen[f.name] = seen.get(f.name, 0) + 1
            name = f.name if seen[f.name] == 1 else f"{f.name}#{seen[f.name]}"
            self.functions.append(RewardFunction(name=name, fn=f.fn, weight=f.weight))

    def __repr__(self) -> str:
        fns = ", ".join(f"{f.name}@{f.weight:g}" for f in self.functions)
        return (f"CompositeReward(alpha={self.config.alpha}, agg={self.config.agg!r}, dense={self.config.dense}, "
                f"scorer={getattr(self.scorer, 'name', None)!r}, functions=[{fns}])")

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()

    def _process(self, samples: Sequence[Sample], completions: Sequence[str]) -> tuple[list[list[Step]], list[list[float]]]:
        steps = [self.split(c) for c in completions]
        if not self.config.score_answer_step:  # the final-answer line is the outcome term's
            steps = [st[:-1] if len(st) > 1 else st for st in steps]
        todo = [i for i, st in enumerate(steps) if st]
        scores: list[list[float]] = [[] for _ in completions]
        if todo:
            tasks = self.outcome.tasks
            questions = []
            for i in todo:
                s = samples[i]
                task = tasks.get(s.answer_type) or tasks.setdefault(s.answer_type, task_for(s))
                questions.append(task.render_question(s))
            got = self.scorer.score_batch(questions, [[st.text for st in steps[i]] for i in todo])  # type: ignore[union-attr]
            who = f"process scorer {getattr(self.scorer, 'name', type(self.scorer).__name__)!r}"
            if len(got) != len(todo):
                raise ValueError(f"{who} returned scores for {len(got)} solutions, expected {len(todo)}")
            for i, sc in zip(todo, got):
                scores[i] = check_probabilities(sc, len(steps[i]), who)
        return steps, scores

    def default_prompts(self, samples: Sequence[Sample]) -> list[list[dict[str, str]]]:
        """The chat messages of each sample (no few-shot examples), passed to functions when no prompts are given."""
        tasks = self.outcome.tasks
        return [(tasks.get(s.answer_type) or tasks.setdefault(s.answer_type, task_for(s))).messages(s) for s in samples]

    def __call__(
        self, samples: Sequence[Sample], completions: Sequence[str], prompts: Sequence[Any] | None = None
    ) -> RewardBatch:
        if len(samples) != len(completions):
            raise ValueError(f"{len(completions)} completions for {len(samples)} samples")
        if prompts is not None and len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        cfg = self.config
        graded = self.outcome.grade(samples, completions)
        parts: dict[str, list[float]] = {
            "outcome": list(graded.rewards),
            "correct": [float(c) for c in graded.correct],
            "has_answer": [float(e is not None) for e in graded.extracted],
        }
        steps = step_scores = None
        if self.scorer is not None:
            steps, step_scores = self._process(samples, completions)
            process = [aggregate_steps(sc, cfg.agg) for sc in step_scores]
            parts["process"] = process
            parts["n_steps"] = [float(len(st)) for st in steps]
            parts["no_steps"] = [float(not st) for st in steps]
            alpha = cfg.alpha
            if cfg.dense:
                rewards = [alpha * o for o in graded.rewards]
            else:
                rewards = [alpha * o + (1.0 - alpha) * p for o, p in zip(graded.rewards, process)]
        else:
            alpha = 1.0
            rewards = list(graded.rewards)
        if self.functions:
            fn_prompts = list(prompts) if prompts is not None else self.default_prompts(samples)
            for f in self.functions:
                got = call_reward_function(f.fn, fn_prompts, completions, samples, name=f.name)
                parts[f"fn/{f.name}"] = got.values
                parts[f"fn/{f.name}/applies"] = [float(a) for a in got.applicable]
                rewards = [r + f.weight * v for r, v in zip(rewards, got.values)]
        return RewardBatch(
            rewards=rewards, outcome=list(graded.rewards), correct=list(graded.correct), steps=steps,
            step_scores=step_scores, dense=cfg.dense, parts=parts, alpha=alpha, extracted=list(graded.extracted),
        )


def build_reward(config: RewardSettings, dtype: str | None = None) -> CompositeReward:
    """A :class:`CompositeReward` with its process scorer (``config.prm``) and functions loaded; a local PRM
    computes in ``config.prm_dtype``, else in ``dtype`` (the policy's; ``auto``: the device's default)."""
    scorer = None
    if config.prm is not None:
        from openrft.rewards.prm.loader import load_scorer

        scorer = load_scorer(config.prm, device=config.prm_device, dtype=config.prm_dtype or dtype,
                             format=config.prm_format, batch_size=config.prm_batch_size)
    return CompositeReward(config, scorer=scorer)
