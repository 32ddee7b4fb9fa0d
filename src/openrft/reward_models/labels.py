"""Step labels for training process reward models: a record type, JSONL I/O, and Math-Shepherd labelling.

A :class:`StepExample` is a question, the steps of one solution, and one label in [0, 1]
per step (1 = the step is right / the solution can still reach the right answer from it).

Sources:

* **JSONL files** of ``{"question", "steps", "labels", "source"?, "meta"?}``
  (:func:`read_step_examples`, :func:`write_step_examples`);
* **CHAMP** (Mao et al. 2024): human first-wrong-step annotations, :mod:`openrft.reward_models.champ`;
* **Math-Shepherd style estimation** (Wang et al. 2024): from the prefix ending at each
  step of a policy completion, sample ``n`` continuations; a step's soft label is the
  fraction of them whose final answer the task's grader accepts (hard label: > 0)
  (:func:`estimate_step_labels`, :func:`rollout_step_examples`).

>>> ex = StepExample("2+2?", ["2+2=4", "so 4"], [1, 1], source="demo")
>>> ex.to_dict()["labels"], hard_labels([0.0, 0.25, 1.0])
([1.0, 1.0], [0.0, 1.0, 1.0])
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrft.data.jsonl import check_fields, read_records, write_records
from openrft.data.sample import Sample
from openrft.models.backends.base import Generator, Prompt, SamplingParams
from openrft.rewards.steps import split_steps

logger = logging.getLogger(__name__)

__all__ = [
    "StepExample", "continuation_prompt", "count_reply_continuations", "estimate_step_labels", "hard_labels",
    "label_policy_rollouts", "read_step_examples", "rollout_step_examples", "write_step_examples",
]

_FIELDS = ("question", "steps", "labels", "source", "meta")


@dataclass(frozen=True)
class StepExample:
    """One solution's steps and a label in [0, 1] per step; ``source`` says where the labels came from."""

    question: str
    steps: tuple[str, ...]
    labels: tuple[float, ...]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError("field 'question': missing or empty")
        if isinstance(self.steps, str) or not isinstance(self.steps, Sequence):
            raise ValueError(f"field 'steps': expected a list of strings, got {type(self.steps).__name__}")
        if isinstance(self.labels, str) or not isinstance(self.labels, Sequence):
            raise ValueError(f"field 'labels': expected a list of numbers, got {type(self.labels).__name__}")
        if not self.steps:
            raise ValueError("field 'steps': empty; an example needs at least one step")
        bad = [i for i, s in enumerate(self.steps) if not isinstance(s, str)]
        if bad:
            raise ValueError(f"field 'steps': item {bad[0]} is {type(self.steps[bad[0]]).__name__}, not a string")
        if len(self.labels) != len(self.steps):
            raise ValueError(f"fields 'steps'/'labels': {len(self.steps)} steps but {len(self.labels)} labels; "
                             "give one label per step")
        labels = []
        for i, x in enumerate(self.labels):
            if not isinstance(x, (int, float)) or not math.isfinite(float(x)) or not 0.0 <= float(x) <= 1.0:
                raise ValueError(f"field 'labels': item {i} is {x!r}; labels are numbers in [0, 1]")
            labels.append(float(x))
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "labels", tuple(labels))
        if not isinstance(self.source, str):
            raise ValueError(f"field 'source': expected a string, got {type(self.source).__name__}")
        if not isinstance(self.meta, dict):
            raise ValueError(f"field 'meta': expected an object, got {type(self.meta).__name__}")

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "steps": list(self.steps), "labels": list(self.labels),
                "source": self.source, "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepExample":
        check_fields(d, _FIELDS, ("question", "steps", "labels"))
        return cls(d["question"], d["steps"], d["labels"], d.get("source") or "", d.get("meta") or {})


def hard_labels(labels: Iterable[float]) -> list[float]:
    """Math-Shepherd's hard estimate: a step is good (1) if any continuation from it reached the right answer."""
    return [1.0 if x > 0 else 0.0 for x in labels]


def read_step_examples(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[StepExample]:
    """Examples from JSONL files; a bad line raises :class:`DataError` naming ``file:line`` and the field."""
    return read_records(paths, StepExample.from_dict, "step examples",
                        '{"question": ..., "steps": [...], "labels": [...]}')


def write_step_examples(path: str | os.PathLike, examples: Iterable[StepExample]) -> Path:
    """Write ``examples`` as JSONL, atomically."""
    return write_records(path, examples)


# ---------------------------------------------------------------------------- Math-Shepherd estimation
def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]


def continuation_prompt(tokenizer, prompt: Prompt, prefix: str) -> str:
    """A raw-string prompt that makes a generator continue ``prefix`` as the assistant's reply to ``prompt``.

    Chat prompts are rendered the way :func:`openrft.models.backends.hf.render_prompt` renders
    them (chat template with the generation prompt, or contents joined by blank lines when the
    tokenizer has no template); a BOS the tokenizer adds again to raw strings is not doubled.
    """
    if isinstance(prompt, str):
        text = prompt
    elif getattr(tokenizer, "chat_template", None) is None:
        text = "\n\n".join(m["content"] for m in prompt) + "\n\n"
    else:
        text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
        bos = tokenizer.bos_token
        if bos and text.startswith(bos) and _adds_bos(tokenizer):
            text = text[len(bos):]
    return text + prefix


def _seed(seed: int, tag: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{tag}:{seed}".encode(), digest_size=8).digest(), "little") & 0x7FFFFFFF


def _progress_bar(total: int, desc: str, show: bool):
    if not show:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="seq", dynamic_ncols=True)
    return bar, (lambda done, _tokens: bar.update(done))


def _generate(generator: Generator, prompts: Sequence[Prompt], params: SamplingParams, desc: str, show: bool):
    bar, progress = _progress_bar(len(prompts) * params.n, desc, show)
    try:
        outs = generator.generate(list(prompts), params, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    if len(outs) != len(prompts):
        raise RuntimeError(f"{type(generator).__name__}.generate returned {len(outs)} results "
                           f"for {len(prompts)} prompts")
    return outs


def _prefix_prompts(samples, completions, split, tasks, tokenizer, examples_for, share_prefixes: bool):
    """The rollout prompt of every step prefix but the last of each completion (with the prefix and the sample
    it belongs to), and ``prompt_of[(i, k)]``: which of them completion ``i``'s step ``k`` ends. With
    ``share_prefixes``, the same prefix of the same question is one prompt."""
    prompts: list[str] = []
    prefixes: list[str] = []
    owners: list[Sample] = []
    prompt_of: dict[tuple[int, int], int] = {}
    seen: dict[tuple, int] = {}
    for i, (sample, completion, steps) in enumerate(zip(samples, completions, split)):
        if len(steps) < 2:
            continue
        chat = tasks[sample.answer_type].messages(sample, examples_for(sample) if examples_for else ())
        for k, step in enumerate(steps[:-1]):
            prefix = completion[:step.end]
            text = continuation_prompt(tokenizer, chat, prefix)
            key = (sample.id, repr(sample.answer), text) if share_prefixes else (i, k)
            if key not in seen:
                seen[key] = len(prompts)
                prompts.append(text)
                prefixes.append(prefix)
                owners.append(sample)
            prompt_of[(i, k)] = seen[key]
    return prompts, prefixes, owners, prompt_of


def _rollout_fractions(generator: Generator, prompts: list[str], prefixes: list[str], owners: list[Sample],
                       tasks, params: SamplingParams, show_progress: bool) -> list[float]:
    """Per prompt, the fraction of its ``params.n`` continuations that its sample's task grades correct
    (``prefix + continuation``), all prompts in one ``generate`` call."""
    from openrft.tasks import grade_all

    if not prompts:
        return []
    outs = _generate(generator, prompts, params, "step rollouts", show_progress)
    texts, graded, index = [], [], []
    for j, (prefix, sample, comps) in enumerate(zip(prefixes, owners, outs)):
        for c in list(comps)[:params.n]:
            texts.append(prefix + (c.text or ""))
            graded.append(sample)
            index.append(j)
    hits = [0] * len(prompts)
    for j, g in zip(index, grade_all(graded, texts, tasks)):
        hits[j] += int(g.correct)
    return [h / params.n for h in hits]


def estimate_step_labels(
    generator: Generator,
    samples: Sequence[Sample],
    completions: Sequence[str],
    n_rollouts: int = 4,
    step_rule: str = "newline",
    max_new_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    tokenizer=None,
    examples_for: Callable[[Sample], Sequence[Sample]] | None = None,
    show_progress: bool = False,
    share_prefixes: bool = True,
    reply_continuations: bool = False,
) -> list[StepExample]:
    """Math-Shepherd soft labels for the steps of ``completions[i]`` (a policy's reply to ``samples[i]``).

    The completion is split by ``step_rule``. For every step but the last, ``n_rollouts``
    continuations are sampled from the prompt + the completion up to the end of that step
    (all prefixes of all completions in one ``generate`` call); the label is the fraction of
    ``prefix + continuation`` texts that the sample's task grades correct. The last step's
    prefix is the whole completion, so its label is the completion's own grade (0 or 1).
    Completions without steps yield no example. Each example's ``question`` is
    ``task.render_question(sample)`` (options included), its ``meta`` the sample id, the
    completion's index and grade, and the rollout count.

    ``share_prefixes`` (default): a step prefix that several completions of the same question
    share (a policy's replies often agree on their first steps, or entirely) is rolled out once
    and its label given to each of them; the estimate of each prefix is the same Monte-Carlo
    fraction either way, with less decoding (how much less: bench/README.md). ``False`` rolls out
    every completion's prefixes independently.

    ``reply_continuations``: also count each completion's own continuation after a prefix as one more
    rollout of it (:func:`count_reply_continuations`; free samples, so lower-variance labels).
    """
    from openrft.tasks import grade_all, task_for

    if len(samples) != len(completions):
        raise ValueError(f"{len(completions)} completions for {len(samples)} samples")
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be >= 1, got {n_rollouts}")
    tokenizer = tokenizer if tokenizer is not None else getattr(generator, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"{type(generator).__name__} exposes no tokenizer to render continuation prompts with; "
                         "pass tokenizer= (the policy's tokenizer)")
    tasks = {s.answer_type: task_for(s) for s in samples}
    split = [split_steps(c, step_rule) for c in completions]
    own = grade_all(list(samples), list(completions), tasks)
    prompts, prefixes, owners, prompt_of = _prefix_prompts(samples, completions, split, tasks, tokenizer,
                                                           examples_for, share_prefixes)
    params = SamplingParams(n=n_rollouts, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            seed=_seed(seed, "rollouts"))
    fractions = _rollout_fractions(generator, prompts, prefixes, owners, tasks, params, show_progress)
    out: list[StepExample] = []
    for i, (sample, steps) in enumerate(zip(samples, split)):
        if not steps:
            continue
        labels = [fractions[prompt_of[(i, k)]] for k in range(len(steps) - 1)] + [own[i].score]
        task = tasks[sample.answer_type]
        out.append(StepExample(task.render_question(sample), [s.text for s in steps], labels,
                               source="math_shepherd",
                               meta={"sample_id": sample.id, "completion_correct": own[i].correct,
                                     "n_rollouts": n_rollouts, "step_rule": step_rule}))
    return count_reply_continuations(out, shared_prefixes=share_prefixes) if reply_continuations else out


def count_reply_continuations(examples: Sequence[StepExample], shared_prefixes: bool = True) -> list[StepExample]:
    """Math-Shepherd labels with each reply's own continuation counted as one more rollout of its step prefixes.

    A policy reply continues each of its step prefixes with a sample from the policy's distribution given that
    prefix (the reply and the rollouts are sampled with the same settings), so whether the reply itself is
    right is one more Monte-Carlo sample of every prefix's value, at no decoding cost. Every reply to a
    question that shares a step prefix counts: a prefix's label becomes
    ``(n_rollouts * label + right replies through it) / (n_rollouts + replies through it)``. The last step's
    label (the reply's own grade) is unchanged. ``examples`` are :func:`estimate_step_labels`' output (each
    ``meta`` names ``sample_id``, ``completion_correct`` and ``n_rollouts``); give all the labelled replies of
    a question together. ``shared_prefixes``: whether they were labelled with ``share_prefixes`` (a shared
    prefix's rollouts then count once; otherwise each reply's own rollouts of it are pooled).

    One difference from the rollouts: a reply's continuation had the generation budget that remained after its
    prefix, a rollout the whole budget again; replies that ran out of tokens are wrong either way.

    >>> meta = {"sample_id": "q", "n_rollouts": 2}
    >>> right = StepExample("q?", ["a", "b", "c"], [0.5, 1.0, 1.0], meta=meta | {"completion_correct": True})
    >>> wrong = StepExample("q?", ["a", "x", "y"], [0.5, 0.0, 0.0], meta=meta | {"completion_correct": False})
    >>> [e.labels for e in count_reply_continuations([right, wrong])]
    [(0.5, 1.0, 1.0), (0.5, 0.0, 0.0)]
    >>> count_reply_continuations([right])[0].labels
    (0.6666666666666666, 1.0, 1.0)
    """
    pooled: dict[tuple, list[float]] = {}  # (question, prefix) -> [right samples, samples]
    counted: set[tuple] = set()
    for e in examples:
        meta = e.meta
        missing = [k for k in ("sample_id", "completion_correct", "n_rollouts") if k not in meta]
        if missing:
            raise ValueError(f"step example of {e.question[:60]!r} has no {', '.join(missing)} in its meta: "
                             "count_reply_continuations needs Math-Shepherd labels from estimate_step_labels")
        n, own = int(meta["n_rollouts"]), float(bool(meta["completion_correct"]))
        for k in range(len(e.steps) - 1):
            key = (meta["sample_id"], e.steps[:k + 1])
            acc = pooled.setdefault(key, [0.0, 0.0])
            if not shared_prefixes or key not in counted:
                acc[0] += n * e.labels[k]
                acc[1] += n
                counted.add(key)
            acc[0] += own
            acc[1] += 1
    out = []
    for e in examples:
        labels = [pooled[(e.meta["sample_id"], e.steps[:k + 1])] for k in range(len(e.steps) - 1)]
        out.append(StepExample(e.question, e.steps, [h / t for h, t in labels] + [e.labels[-1]], e.source,
                               e.meta | {"reply_continuations": True}))
    return out


def rollout_step_examples(
    generator: Generator,
    samples: Sequence[Sample],
    n_completions: int = 1,
    n_rollouts: int = 4,
    step_rule: str = "newline",
    max_new_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    tokenizer=None,
    examples_for: Callable[[Sample], Sequence[Sample]] | None = None,
    show_progress: bool = False,
    share_prefixes: bool = True,
    reply_continuations: bool = False,
) -> list[StepExample]:
    """Sample ``n_completions`` policy replies per sample, then label their steps with :func:`estimate_step_labels`:
    :func:`label_policy_rollouts` in one pass (one ``generate`` call each), with nothing kept on disk.
    ``meta["completion_index"]`` numbers a sample's replies."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="openrft-labels-") as tmp:
        return label_policy_rollouts(
            generator, samples, tmp, n_completions=n_completions, n_rollouts=n_rollouts, step_rule=step_rule,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
            chunk=max(1, len(samples)), tokenizer=tokenizer, examples_for=examples_for, show_progress=show_progress,
            share_prefixes=share_prefixes, reply_continuations=reply_continuations)


#: :func:`label_policy_rollouts`' per-question stores, and the flat StepExample file written from them
COMPLETIONS_FILE, STEP_LABELS_FILE, FLAT_STEPS_FILE = "completions.jsonl", "step_labels.jsonl", "steps.jsonl"


def _check_label_request(samples: Sequence[Sample], n_completions: int, n_rollouts: int, chunk: int) -> None:
    if n_completions < 1:
        raise ValueError(f"n_completions must be >= 1 (policy completions labelled per question), got {n_completions}")
    if n_rollouts < 1:
        raise ValueError(f"n_rollouts must be >= 1 (continuations sampled from each step prefix to estimate its "
                         f"label), got {n_rollouts}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if not samples:
        raise ValueError("no questions to label")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError("sample ids must be unique: labels are stored per question id")


def _sample_replies(generator: Generator, samples: Sequence[Sample], store, done: dict[str, Any], tasks,
                    examples_for, n: int, sampling: dict[str, Any], seed: int, per_call: int,
                    show_progress: bool) -> None:
    """Append ``n`` policy replies per question not yet in ``store`` (``done``: what it holds, updated),
    ``per_call`` questions per ``generate`` call, each call seeded by its first question."""
    todo = [s for s in samples if s.id not in done]
    for start in range(0, len(todo), per_call):
        part = todo[start:start + per_call]
        chats = [tasks[s.answer_type].messages(s, examples_for(s) if examples_for else ()) for s in part]
        params = SamplingParams(n=n, seed=_seed(seed, f"policy:{part[0].id}"), **sampling)
        outs = _generate(generator, chats, params, "policy completions", show_progress)
        records = [{"id": s.id, "texts": [c.text or "" for c in list(comps)[:n]]} for s, comps in zip(part, outs)]
        store.append(records)
        done.update({r["id"]: r for r in records})


def label_policy_rollouts(
    generator: Generator,
    samples: Sequence[Sample],
    out_dir: str | os.PathLike,
    *,
    n_completions: int = 4,
    n_rollouts: int = 4,
    step_rule: str = "newline",
    max_new_tokens: int = 512,
    temperature: float = 0.7,
    top_p: float = 1.0,
    seed: int = 0,
    chunk: int = 4,
    label_first: int | None = None,
    tokenizer=None,
    examples_for: Callable[[Sample], Sequence[Sample]] | None = None,
    show_progress: bool = False,
    share_prefixes: bool = True,
    reply_continuations: bool = False,
) -> list[StepExample]:
    """Math-Shepherd labels of the policy's own replies, resumable: a killed run loses at most the questions in flight.

    Two append-only stores in ``out_dir`` (a :class:`~openrft.core.rundir.JsonlStore` each):

    * ``completions.jsonl``: per question, the policy's ``n_completions`` replies, sampled ``4 * chunk``
      questions per ``generate`` call;
    * ``step_labels.jsonl``: per question, its labelled solutions (``StepExample`` dicts; empty when no
      reply had a step), estimated ``chunk`` questions at a time (their step prefixes x ``n_rollouts``
      continuations decode together).

    ``label_first``: label only the first that many replies of each question (all are kept in
    ``completions.jsonl``, e.g. for best-of-k). ``share_prefixes`` and ``reply_continuations``: see
    :func:`estimate_step_labels` (a question's replies are labelled in the same call, so the prefixes they share
    are rolled out once, and each of them counts the continuations of all its labelled replies). A rerun
    skips the questions already in each store. Every call's sampling seed derives from ``seed`` and
    the first question of its chunk, and chunks keep their boundaries across a resume (the remaining
    questions keep their order), so a resumed run labels exactly what an uninterrupted one does. Returns
    the examples of ``samples`` in order; ``meta`` carries ``sample_id`` and ``completion_index``.
    """
    from openrft.core.rundir import JsonlStore
    from openrft.tasks import task_for

    _check_label_request(samples, n_completions, n_rollouts, chunk)
    out = Path(out_dir)
    completions = JsonlStore(out / COMPLETIONS_FILE)
    labelled = JsonlStore(out / STEP_LABELS_FILE)
    done_c, done_l = completions.load(), labelled.load()
    tasks = {s.answer_type: task_for(s) for s in samples}

    sampling = {"temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
    _sample_replies(generator, samples, completions, done_c, tasks, examples_for, n_completions, sampling, seed,
                    per_call=4 * chunk, show_progress=show_progress)

    todo = [s for s in samples if s.id not in done_l]
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        flat_samples, flat_texts, index = [], [], []
        for s in part:
            for j, text in enumerate(done_c[s.id]["texts"][:label_first]):
                flat_samples.append(s)
                flat_texts.append(text)
                index.append(j)
        examples = estimate_step_labels(
            generator, flat_samples, flat_texts, n_rollouts=n_rollouts, step_rule=step_rule,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            seed=_seed(seed, f"rollouts:{part[0].id}"), tokenizer=tokenizer, examples_for=examples_for,
            show_progress=show_progress, share_prefixes=share_prefixes, reply_continuations=reply_continuations)
        kept = [(s, j) for s, j, text in zip(flat_samples, index, flat_texts) if split_steps(text, step_rule)]
        per_question: dict[str, list[dict[str, Any]]] = {s.id: [] for s in part}
        for e, (s, j) in zip(examples, kept, strict=True):
            per_question[s.id].append(StepExample(e.question, e.steps, e.labels, e.source,
                                                  e.meta | {"completion_index": j}).to_dict())
        records = [{"id": sid, "examples": exs} for sid, exs in per_question.items()]
        labelled.append(records)
        done_l.update({r["id"]: r for r in records})
    return [StepExample.from_dict(d) for s in samples for d in done_l[s.id]["examples"]]

