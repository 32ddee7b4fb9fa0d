"""Rejection sampling until correct: the per-round loop of ``openrft synthesize``.

A *chunk* of questions is sampled together. Round ``r`` asks every question still open
for ``n_r`` completions in one ``generate`` call (``n_r`` from a growing schedule such as
4, 8, 16, 32, capped by what is left of the budget), grades them with the question's
task (:func:`~openrft.tasks.grade_all`: one :meth:`~openrft.tasks.Task.grade_batch` call per
task, so program-of-thought replies run in one parallel sandbox call), and closes
a question as soon as it holds ``m`` distinct correct traces or its budget is spent.

All open questions of a chunk are always at the same round and have spent the same number
of attempts, so one round is one call. Round ``r`` samples with :func:`round_seed`
``(seed, r)``; with the chunk, the round and each open question's state, a round is fully
determined, which is what lets the stage checkpoint between rounds and resume to the same
result (:class:`QuestionState` round-trips through JSON).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from openrft.data.sample import Sample
from openrft.models.backends.base import Completion, Generator, Prompt, SamplingParams
from openrft.tasks.base import Task, grade_all

logger = logging.getLogger(__name__)

FALLBACK_MODES = ("answer", "drop")


def round_seed(seed: int, round_index: int) -> int:
    """Sampling seed of round ``round_index``: a stable hash of ``(seed, round)``.

    >>> round_seed(0, 0) == round_seed(0, 0), round_seed(0, 0) == round_seed(0, 1)
    (True, False)
    """
    digest = hashlib.blake2b(f"synthesize:{seed}:{round_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def round_sizes(schedule: Sequence[int], budget: int) -> list[int]:
    """Completions asked per round: the schedule (its last size repeated), capped by the budget left.

    >>> round_sizes([4, 8, 16, 32], 64)
    [4, 8, 16, 32, 4]
    >>> round_sizes([4, 8], 30), round_sizes([16], 5)
    ([4, 8, 8, 8, 2], [5])
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    if not schedule or any(int(n) < 1 for n in schedule):
        raise ValueError(f"the round schedule needs sizes >= 1, got {list(schedule)}")
    sizes: list[int] = []
    left = budget
    while left > 0:
        n = min(int(schedule[min(len(sizes), len(schedule) - 1)]), left)
        sizes.append(n)
        left -= n
    return sizes


@dataclass
class QuestionState:
    """What sampling has found so far for one question.

    ``traces`` holds up to ``m`` distinct correct traces ``{"text", "extracted"}``;
    ``correct`` counts every correct attempt (duplicates included), ``truncated`` every
    attempt cut at ``max_new_tokens``, ``first_correct`` the 1-based attempt that was first right.
    """

    sample: Sample
    attempts: int = 0
    correct: int = 0
    truncated: int = 0
    first_correct: int | None = None
    traces: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample.to_dict(), "attempts": self.attempts, "correct": self.correct,
                "truncated": self.truncated, "first_correct": self.first_correct, "traces": self.traces}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QuestionState":
        return cls(sample=Sample.from_dict(d["sample"]), attempts=d["attempts"], correct=d["correct"],
                   truncated=d["truncated"], first_correct=d["first_correct"], traces=list(d["traces"]))


@dataclass(frozen=True)
class LoopSettings:
    """The knobs the loop itself reads (the stage's config holds more)."""

    budget: int = 64
    rounds: tuple[int, ...] = (4, 8, 16, 32)
    m: int = 1
    fallback: str = "answer"
    accept_truncated: bool = False
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.m < 1:
            raise ValueError(f"m must be >= 1 (correct traces kept per question), got {self.m}")
        if self.fallback not in FALLBACK_MODES:
            raise ValueError(f"fallback={self.fallback!r} is unknown; valid: {', '.join(FALLBACK_MODES)}")
        round_sizes(self.rounds, self.budget)  # validates budget and schedule

    @property
    def sizes(self) -> list[int]:
        """Round sizes; greedy decoding (temperature 0) gets one attempt, since repeats would be identical."""
        return [1] if self.temperature == 0 else round_sizes(self.rounds, self.budget)

    def params(self, round_index: int) -> SamplingParams:
        return SamplingParams(n=self.sizes[round_index], temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, seed=round_seed(self.seed, round_index))

    def is_closed(self, state: QuestionState) -> bool:
        return len(state.traces) >= self.m or state.attempts >= sum(self.sizes)


def sample_round(
    generator: Generator,
    states: Sequence[QuestionState],
    prompts: Mapping[str, Prompt],
    tasks: Mapping[str, Task],
    settings: LoopSettings,
    round_index: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Run round ``round_index`` for the open ``states`` (updated in place); returns new tokens generated."""
    params = settings.params(round_index)
    outs = generator.generate([prompts[s.sample.id] for s in states], params, progress=progress)
    if len(outs) != len(states):
        raise RuntimeError(f"{type(generator).__name__}.generate returned {len(outs)} results "
                           f"for {len(states)} prompts")
    flat: list[tuple[QuestionState, int, Completion]] = []
    for state, comps in zip(states, outs):
        flat += [(state, state.attempts + k + 1, c) for k, c in enumerate(list(comps)[: params.n])]
    texts = [(c.text or "") if isinstance(c.text, str) else "" for _, _, c in flat]
    grades = grade_all([st.sample for st, _, _ in flat], texts, tasks)
    tokens = 0
    for (state, attempt, comp), text, grade in zip(flat, texts, grades):
        tokens += int(comp.num_tokens or 0)
        cut = comp.finish_reason == "length"
        state.truncated += cut
        if not grade.correct or (cut and not settings.accept_truncated):
            continue
        state.correct += 1
        if state.first_correct is None:
            state.first_correct = attempt
        if len(state.traces) < settings.m and all(t["text"].strip() != text.strip() for t in state.traces):
            state.traces.append({"text": text, "extracted": grade.extracted})
    for state in states:  # budget is spent by what was asked, even if a server returned fewer choices
        state.attempts += params.n
    return tokens


def finalize(states: Sequence[QuestionState], tasks: Mapping[str, Task], settings: LoopSettings,
             teacher: str) -> list[dict[str, Any]]:
    """One ``traces.jsonl`` record per closed question; the unsolved fall back to the reference reply or are dropped.

    A dropped question still gets a record (``"dropped": true``, no traces), so a rerun
    knows it is done; :func:`~openrft.synthesize.stage.load_traces` skips it.
    """
    unsolved = [s for s in states if not s.traces]
    fallback: dict[str, dict[str, Any]] = {}
    if unsolved and settings.fallback == "answer":
        texts = [tasks[s.sample.answer_type].render_answer(s.sample) for s in unsolved]
        grades = grade_all([s.sample for s in unsolved], texts, tasks)
        for state, text, grade in zip(unsolved, texts, grades):
            if not grade.correct:
                logger.warning("fallback answer of %s does not pass its own task's grader (%r -> %r)",
                               state.sample.id, text[:80], grade.extracted)
            fallback[state.sample.id] = {"text": text, "extracted": grade.extracted}
    records = []
    for s in states:
        fell_back = s.sample.id in fallback
        records.append({
            "id": s.sample.id,
            "task": s.sample.task,
            "sample": s.sample.to_dict(),
            "traces": [fallback[s.sample.id]] if fell_back else list(s.traces),
            "attempts": s.attempts,
            "correct": s.correct,
            "pass_rate": s.correct / s.attempts if s.attempts else 0.0,
            "first_correct": s.first_correct,
            "truncated": s.truncated,
            "fallback": fell_back,
            "dropped": not s.traces and not fell_back,
            "teacher": teacher,
        })
    return records
