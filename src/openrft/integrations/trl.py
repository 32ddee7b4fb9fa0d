"""openrft's graders and composite reward as trl ``reward_funcs``; openrft samples as a trl dataset.

trl calls a reward function as ``f(prompts=..., completions=..., **columns)`` with every dataset column (one
entry per completion) and wants one ``float | None`` per completion, ``None`` meaning "this function does not
apply". :class:`TrlReward` grades each completion with its task's own grader (the one ``openrft eval`` uses) and,
for :func:`composite_reward`, adds the process reward of a PRM exactly as ``openrft rl`` does.

What grading needs comes from the row: the ``openrft_sample`` column (the whole sample as JSON, written by
:func:`trl_dataset`) or, for a dataset of one's own, the ``answer`` column with ``answer_type`` (a column or the
function's ``answer_type``) and, for multiple choice, ``choices``. A row with neither is not graded: ``None``.
A completion that states no answer is graded (0.0, a wrong answer): trl 1.16 gives a completion that every
reward function returns ``None`` for no advantage at all, so ``None`` there would stop punishing replies that
never answer.

>>> reward = outcome_reward(answer_type="numeric")
>>> reward(prompts=["2+3?"] * 3, completions=["So \\\\boxed{5}.", [{"role": "assistant", "content": "So 6."}], "5"],
...        answer=["5", "5", None])
[1.0, 0.0, None]
"""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from openrft.data.sample import Sample
from openrft.rewards.base import CompositeReward, RewardSettings, build_reward
from openrft.tasks import Task, task_for

__all__ = ["SAMPLE_COLUMN", "TrlReward", "completion_text", "composite_reward", "outcome_reward", "row_samples",
           "trl_dataset", "trl_rows"]

#: the column holding a row's whole :class:`~openrft.data.sample.Sample` as JSON
SAMPLE_COLUMN = "openrft_sample"


def trl_rows(samples: Sequence[Sample],
             examples_for: Callable[[Sample], Sequence[Sample]] | None = None) -> list[dict[str, Any]]:
    """One trl row per sample: ``prompt`` (the task's chat messages, with the few-shot examples of
    ``examples_for(sample)`` when given, as every openrft stage builds them) and the grading columns
    ``answer``, ``answer_type``, ``choices``, ``task``, ``id``, ``question`` and ``openrft_sample``."""
    tasks: dict[str, Task] = {}
    rows = []
    for s in samples:
        task = tasks.get(s.answer_type) or tasks.setdefault(s.answer_type, task_for(s))
        rows.append({
            "prompt": task.messages(s, list(examples_for(s)) if examples_for is not None else []),
            "answer": s.answer, "answer_type": s.answer_type,
            "choices": list(s.choices) if s.choices is not None else None,
            "task": s.task, "id": s.id, "question": s.question,
            SAMPLE_COLUMN: json.dumps(s.to_dict(), ensure_ascii=False, sort_keys=True),
        })
    return rows


def trl_dataset(samples: Sequence[Sample], examples_for: Callable[[Sample], Sequence[Sample]] | None = None):
    """:func:`trl_rows` as a ``datasets.Dataset`` (conversational prompts), ready for ``GRPOTrainer``."""
    from datasets import Dataset

    return Dataset.from_list(trl_rows(samples, examples_for))


def _content(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "" if content is None else str(content)


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The text to grade: a plain-text completion itself, or a conversational one's assistant messages joined.

    >>> completion_text("So 5."), completion_text([{"role": "assistant", "content": "So 5."}])
    ('So 5.', 'So 5.')
    """
    if isinstance(completion, str):
        return completion
    said = [m for m in completion if m.get("role") == "assistant"] or list(completion)
    return "\n".join(_content(m) for m in said)


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    return _content(users[-1]) if users else ""


@functools.lru_cache(maxsize=4096)
def _decode(text: str) -> Sample:
    return Sample.from_dict(json.loads(text))


def _column(columns: Mapping[str, Any], name: str, n: int) -> list[Any]:
    values = columns.get(name)
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} entries for {n} completions")
    return list(values)


def row_samples(prompts: Sequence[Any], columns: Mapping[str, Any],
                answer_type: str | None = None) -> list[Sample | None]:
    """The sample each row is graded against (see the module docstring), ``None`` where a row has nothing to
    grade against."""
    n = len(prompts)
    encoded = _column(columns, SAMPLE_COLUMN, n)
    answers, types, choices = (_column(columns, k, n) for k in ("answer", "answer_type", "choices"))
    ids, tasks, questions = (_column(columns, k, n) for k in ("id", "task", "question"))
    out: list[Sample | None] = []
    for i in range(n):
        if encoded[i] is not None:
            out.append(_decode(encoded[i]))
        elif answers[i] is None or not str(answers[i]).strip():
            out.append(None)
        elif not (types[i] or answer_type):
            raise ValueError("a row has an answer but no answer type: add an 'answer_type' column "
                             "(mcq|numeric|text|program) or give the reward function answer_type=...")
        else:
            out.append(Sample(id=str(ids[i] if ids[i] is not None else i), task=str(tasks[i] or "trl"),
                              question=questions[i] or _prompt_text(prompts[i]), answer=str(answers[i]),
                              answer_type=types[i] or answer_type, choices=choices[i]))
    return out


def _check_not_dense(config: RewardSettings) -> None:
    if config.dense:
        raise ValueError("trl takes one reward per completion; dense per-step rewards need 'openrft rl' "
                         "(set dense to false)")


class TrlReward:
    """An openrft :class:`~openrft.rewards.base.CompositeReward` behind trl's reward-function signature.

    Args:
        reward: the reward (outcome only, or outcome + PRM, plus extra functions); it must not be dense, since trl
            takes one reward per completion.
        answer_type: the answer type of rows that carry an ``answer`` but no ``answer_type`` column.
        name: the function's ``__name__``: trl logs ``rewards/<name>/mean`` and ``rewards/<name>/std``.

    Called inside a trl trainer, it also logs the mean of each reward part (``<name>/correct``,
    ``<name>/has_answer``, ``<name>/process``, ...) through trl's ``log_metric``, and each extracted answer as the
    ``<name>/extracted`` column of trl's completions table through ``log_extra``.
    """

    def __init__(self, reward: CompositeReward, *, answer_type: str | None = None, name: str = "openrft_reward"):
        _check_not_dense(reward.config)
        self.reward = reward
        self.answer_type = answer_type
        self.__name__ = name

    def __repr__(self) -> str:
        return f"TrlReward({self.__name__!r}, {self.reward!r})"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        samples = row_samples(prompts, columns, self.answer_type)
        graded = [i for i, s in enumerate(samples) if s is not None]
        out: list[float | None] = [None] * len(completions)
        if not graded:
            return out
        batch = self.reward([samples[i] for i in graded], [completion_text(completions[i]) for i in graded],
                            prompts=[prompts[i] for i in graded])
        extracted: list[str | None] = [None] * len(completions)
        for i, value, answer in zip(graded, batch.rewards, batch.extracted):
            out[i], extracted[i] = value, answer
        if callable(columns.get("log_metric")):
            for part, values in batch.parts.items():
                columns["log_metric"](f"{self.__name__}/{part}", statistics.fmean(values))
        if callable(columns.get("log_extra")):
            columns["log_extra"](f"{self.__name__}/extracted", extracted)
        return out

    def close(self) -> None:
        """Release the process scorer (a local PRM's memory, a remote scorer's connections)."""
        self.reward.close()


def outcome_reward(partial_credit: float = 0.0, *, answer_type: str | None = None,
                   name: str = "openrft_outcome") -> TrlReward:
    """The task graders as a trl reward function: 1.0 for a right answer, ``partial_credit`` (ReFT: 0.1) for a
    wrong one that was stated, 0.0 for none."""
    return TrlReward(CompositeReward(RewardSettings(partial_credit=partial_credit)), answer_type=answer_type,
                     name=name)


def composite_reward(config: RewardSettings, *, answer_type: str | None = None,
                     name: str = "openrft_reward") -> TrlReward:
    """``openrft rl``'s reward as a trl reward function: ``alpha * outcome + (1 - alpha) * f(PRM step scores)``
    (with ``config.prm``) plus ``config.functions``, the PRM loaded as :func:`~openrft.rewards.base.build_reward`
    loads it."""
    _check_not_dense(config)  # before a PRM loads
    return TrlReward(build_reward(config), answer_type=answer_type, name=name)
