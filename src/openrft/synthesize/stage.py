"""The ``synthesize`` stage: config, resumable runner, and the reader the SFT stage uses.

``run_synthesize`` writes into its stage directory:

* ``traces.jsonl``: one line per finished question, appended (and fsynced) as soon as the
  question closes: ``{"id", "task", "sample", "traces": [{"text", "extracted"}], "attempts",
  "correct", "pass_rate", "first_correct", "truncated", "fallback", "dropped", "teacher"}``;
* ``open.json``: between rounds, the state of the chunk being sampled (round index and each
  open question's attempts and traces so far), written atomically, deleted when the chunk ends;
* ``manifest.json``: config, input hashes, versions, and on success the stats.

A rerun with the same settings skips finished questions and restarts the interrupted chunk
at the round it was in, with the same questions in the same order, so it reproduces the
file an uninterrupted run writes; a kill -9 loses at most the round in flight.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.models.backends.base import HTTP_LIMITS, Generator, HTTPLimits, Prompt, http_limit
from openrft.core.rundir import (
    IncompatibleRunError, JsonlStore, StageInputError, atomic_write_json, begin_stage, finish_stage, stable_hash,
)
from openrft.synthesize.sampler import FALLBACK_MODES, LoopSettings, QuestionState, finalize, sample_round
from openrft.tasks import Task, task_for, without_rationale

logger = logging.getLogger(__name__)

STAGE = "synthesize"
TRACES = "traces.jsonl"
SOURCES = ("model", "gold")
OPEN_STATE = "open.json"


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class SynthesizeConfig:
    """How to sample warm-up traces (OpenRFT 2.2.1). Defaults follow the paper: 64 attempts, bare-answer fallback."""

    budget: int = _help("most completions sampled per question (OpenRFT: 64)", default=64)
    rounds: tuple[int, ...] = _help(
        "completions asked per open question in each round; the last size repeats, capped by the budget left",
        default=(4, 8, 16, 32))
    m: int = _help("correct traces wanted per question; a question closes once it holds m distinct ones",
                   default=1)
    fallback: str = _help("for a question with no correct trace after the budget: 'answer' keeps the task's "
                          "reference reply (task.render_answer: the bare gold answer, the paper's choice, or the "
                          "dataset's worked solution + answer when it ships one), 'drop' leaves it out",
                          default="answer")
    accept_truncated: bool = _help("accept a correct trace cut off at max_new_tokens (finish_reason 'length')",
                                   default=False)
    temperature: float = _help("sampling temperature (the paper samples); 0 = greedy, one attempt", default=0.7)
    top_p: float = _help("nucleus sampling mass", default=1.0)
    max_new_tokens: int = _help("generation budget per completion", default=2048)
    seed: int = _help("sampling seed; round r samples with a seed derived from (seed, r)", default=0)
    questions_per_batch: int = _help("questions sampled together (one generate call per round); "
                                     "also the unit of resume", default=64)
    backend: str = _help("generation backend: transformers, openai (any OpenAI-compatible server), vllm",
                         default="transformers")
    model: str | None = _help("the student model (bundled name, local directory or hub id; the CLI samples from "
                              "the bundled smollm2-135m when neither it nor a teacher is named)", default=None)
    teacher: str | None = _help("sample from this model instead of the student (recorded as the teacher)",
                                default=None)
    base_url: str | None = _help("OpenAI-compatible endpoint for --backend openai", default=None)
    batch_size: int = _help("sequences decoded together (transformers backend)", default=32)
    timeout: float = http_limit("timeout")
    concurrency: int = http_limit("concurrency")
    max_retries: int = http_limit("max_retries")
    source: str = _help("model: sample traces (OpenRFT); gold: the dataset's own annotated rationale + the answer, "
                        "no sampling (ReFT's SFT data, e.g. GSM8K rationales); questions without one fall back",
                        default="model")

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} is unknown; valid: {', '.join(SOURCES)}")
        self.rounds = tuple(int(n) for n in self.rounds)
        for name in ("questions_per_batch", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.fallback not in FALLBACK_MODES:
            raise ValueError(f"fallback={self.fallback!r} is unknown; valid: {', '.join(FALLBACK_MODES)}")
        self.settings.params(0)  # validates budget, rounds, m, temperature, top_p, max_new_tokens
        HTTPLimits.of(self)  # validates timeout, concurrency, max_retries

    @property
    def settings(self) -> LoopSettings:
        return LoopSettings(budget=self.budget, rounds=self.rounds, m=self.m, fallback=self.fallback,
                            accept_truncated=self.accept_truncated, temperature=self.temperature,
                            top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=self.seed)

    @property
    def sampled_model(self) -> str | None:
        return self.teacher or self.model

    def fingerprint_fields(self) -> dict[str, Any]:
        """The fields that change what is sampled (not the endpoint address, the decoding batch size or the HTTP
        limits, which were not fields when the stage's identity was first defined, so they stay out of it)."""
        return {k: v for k, v in asdict(self).items() if k not in HTTP_LIMITS} | {"base_url": None, "batch_size": None}


def build_generator(config: SynthesizeConfig, cache_dir: str | os.PathLike | None = None, **kwargs: Any) -> Generator:
    """The generator that samples: the teacher if one is named, else the student."""
    from openrft.models.backends import make_generator

    if not config.sampled_model:
        raise ValueError("name a model (--model) or a teacher (--teacher) to sample from")
    if config.source == "gold":
        raise ValueError("source 'gold' reads the dataset's rationales and samples nothing; it needs no generator")
    return make_generator(config.backend, config.sampled_model, base_url=config.base_url,
                          batch_size=config.batch_size, cache_dir=str(cache_dir) if cache_dir else None,
                          http=HTTPLimits.of(config), **kwargs)


@dataclass
class SynthesizeResult:
    """Records in sample order (dropped questions included) and the stage's stats."""

    records: list[dict[str, Any]]
    stats: dict[str, Any]
    out_dir: Path | None = None


def run_synthesize(
    samples: Sequence[Sample],
    generator: Generator | None,
    config: SynthesizeConfig,
    out_dir: str | os.PathLike | None = None,
    *,
    examples_for: Callable[[Sample], Sequence[Sample]] | None = None,
    show_progress: bool = True,
) -> SynthesizeResult:
    """Sample traces for ``samples`` until each reaches its gold answer (see the module docstring).

    Prompts are ``task.messages(sample, examples_for(sample))``, the layout evaluation uses.
    With ``out_dir``, every closed question is appended to ``traces.jsonl`` at once and a rerun
    with the same settings resumes; a finished stage with the same settings is not rerun.
    """
    if not samples:
        raise StageInputError("no samples to synthesize traces for")
    if config.source == "gold":
        return _gold_traces(samples, config, out_dir)
    if generator is None:
        raise ValueError("sampling traces (source 'model') needs a generator")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise StageInputError(f"duplicate sample id {dup!r}; synthesis keys its output by id")
    settings = config.settings
    served = getattr(generator, "model", None)  # the OpenAI client's model name
    teacher = config.sampled_model or (served if isinstance(served, str) else generator.name)
    tasks: dict[str, Task] = {s.answer_type: task_for(s) for s in samples}
    prompts: dict[str, Prompt] = {
        s.id: tasks[s.answer_type].messages(s, examples_for(s) if examples_for else ()) for s in samples}
    chunks = [list(samples[i:i + config.questions_per_batch])
              for i in range(0, len(samples), config.questions_per_batch)]

    done: dict[str, dict[str, Any]] = {}
    store = manifest = None
    pending: tuple[int, int, list[QuestionState]] | None = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        inputs = {"samples": stable_hash([s.to_dict() for s in samples]),
                  "prompts": stable_hash([prompts[i] for i in ids])}
        if getattr(generator, "precision", None):  # fp32 runs keep their old identity
            inputs["precision"] = generator.precision
        manifest, finished = begin_stage(out_dir, STAGE, config.fingerprint_fields(), inputs, seed=config.seed,
                                         resume_keys=[TRACES, OPEN_STATE])
        store = JsonlStore(out_dir / TRACES)
        done = store.load()
        if finished and all(i in done for i in ids):
            records = [done[i] for i in ids]
            return SynthesizeResult(records, dict(manifest.stats), out_dir)
        pending = _load_open_state(out_dir / OPEN_STATE, chunks)

    todo = sum(i not in done for i in ids)
    progress = _Progress(todo, show_progress)
    t0 = time.perf_counter()
    generated = tokens = kept = 0
    try:
        for k, chunk in enumerate(chunks):
            if pending is not None and pending[0] == k:
                _, start_round, states = pending
            else:
                states = [QuestionState(s) for s in chunk if s.id not in done]
                start_round = 0
            counts = _run_chunk(generator, states, start_round, k, prompts, tasks, settings, teacher, done, store,
                                out_dir, progress)
            generated, tokens, kept = generated + counts[0], tokens + counts[1], kept + counts[2]
    finally:
        progress.close()
    seconds = time.perf_counter() - t0
    records = [done[i] for i in ids]
    stats = synthesis_stats(records) | {
        "seconds": round(seconds, 3),
        "completions_generated": generated,
        "tokens_generated": tokens,
        "completions_per_s": round(generated / seconds, 3) if seconds > 0 else None,
        "traces_per_s": round(kept / seconds, 3) if seconds > 0 else None,
    }
    if out_dir is not None:
        finish_stage(out_dir, manifest, **stats)
    return SynthesizeResult(records, stats, out_dir)


def _run_chunk(generator: Generator, states: list[QuestionState], r: int, k: int, prompts, tasks, settings,
               teacher: str, done: dict[str, dict[str, Any]], store, out_dir: Path | None,
               progress: "_Progress") -> tuple[int, int, int]:
    """Rounds of chunk ``k`` from round ``r`` until every question is closed; each closed question is recorded
    in ``done`` (and appended to ``store``) at once, the open ones in ``open_state.json``. Returns the completions
    generated, their tokens and the traces kept."""
    generated = tokens = kept = 0
    while states:
        progress.round(r, len(states))
        tokens += sample_round(generator, states, prompts, tasks, settings, r, progress=progress.generated)
        generated += len(states) * settings.sizes[r]
        closed = [s for s in states if settings.is_closed(s)]
        states = [s for s in states if not settings.is_closed(s)]
        r += 1
        new = [rec for rec in finalize(closed, tasks, settings, teacher) if rec["id"] not in done]
        for rec in new:
            done[rec["id"]] = rec
            kept += 0 if rec["fallback"] else len(rec["traces"])
        if store is not None:
            store.append(new)  # first the closed questions, then the state that no longer holds them
            if states:
                atomic_write_json(out_dir / OPEN_STATE,  # type: ignore[operator]
                                  {"chunk": k, "round": r, "states": [s.to_dict() for s in states]})
            else:
                (out_dir / OPEN_STATE).unlink(missing_ok=True)  # type: ignore[operator]
        progress.closed(len(new))
    return generated, tokens, kept


def _gold_traces(samples: Sequence[Sample], config: SynthesizeConfig,
                 out_dir: str | os.PathLike | None) -> SynthesizeResult:
    """One trace per sample from its annotated rationale followed by the task's answer line; graded by the
    task like sampled traces, so a rationale that does not reach the gold answer falls back too."""
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise StageInputError(f"duplicate sample id {dup!r}; synthesis keys its output by id")
    manifest = None
    if out_dir is not None:
        out_dir = Path(out_dir)
        inputs = {"samples": stable_hash([s.to_dict() for s in samples])}
        manifest, finished = begin_stage(out_dir, STAGE, config.fingerprint_fields(), inputs, seed=config.seed,
                                         resume_keys=[TRACES])
        done = JsonlStore(out_dir / TRACES).load()
        if finished and all(i in done for i in ids):
            return SynthesizeResult([done[i] for i in ids], dict(manifest.stats), out_dir)
    t0 = time.perf_counter()
    records = []
    for s in samples:
        task = task_for(s)
        text = task.render_answer(s)  # the dataset's worked solution, then the answer line
        grade = task.grade(text, s)
        worked = task.has_reference_solution(s)
        ok = worked and grade.correct
        if worked and not grade.correct:
            logger.warning("gold rationale of %s does not reach its answer (%r); using the bare answer", s.id,
                           grade.extracted)
        if not ok:
            text = task.render_answer(without_rationale(s))
            grade = task.grade(text, s)
        trace = {"text": text, "extracted": grade.extracted}
        records.append({"id": s.id, "task": s.task, "sample": s.to_dict(), "traces": [trace], "attempts": 0,
                        "correct": int(ok), "pass_rate": float(ok), "first_correct": None, "truncated": 0,
                        "fallback": not ok, "dropped": False, "teacher": "gold"})
    stats = synthesis_stats(records) | {"seconds": round(time.perf_counter() - t0, 3), "source": "gold"}
    if out_dir is not None:
        JsonlStore(out_dir / TRACES).rewrite(records)
        finish_stage(out_dir, manifest, **stats)
    return SynthesizeResult(records, stats, out_dir)


def _load_open_state(path: Path, chunks: list[list[Sample]]) -> tuple[int, int, list[QuestionState]] | None:
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    k, r = int(data["chunk"]), int(data["round"])
    states = [QuestionState.from_dict(d) for d in data["states"]]
    if k >= len(chunks) or not {s.sample.id for s in states} <= {s.id for s in chunks[k]}:
        raise IncompatibleRunError(f"{path} does not match the samples of this run; delete it to redo its chunk")
    return k, r, states


def synthesis_stats(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts over records: solved and fallback fractions, mean pass rate and attempts, attempts histogram."""
    n = len(records)
    if not n:
        return {"samples": 0}
    hist = Counter(r["attempts"] for r in records)
    return {
        "samples": n,
        "solved": sum(r["correct"] > 0 for r in records),
        "solved_fraction": sum(r["correct"] > 0 for r in records) / n,
        "fallback_fraction": sum(r["fallback"] for r in records) / n,
        "dropped": sum(r.get("dropped", False) for r in records),
        "traces": sum(len(r["traces"]) for r in records if not r["fallback"]),
        "mean_pass_rate": sum(r["pass_rate"] for r in records) / n,
        "mean_attempts": sum(r["attempts"] for r in records) / n,
        "attempts_histogram": {str(a): hist[a] for a in sorted(hist)},
    }


def task_summary(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-task rows: samples, solved fraction, mean attempts, fallback fraction, mean pass rate."""
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_task[r.get("task") or r["sample"]["task"]].append(r)
    return [{"task": t} | synthesis_stats(recs) for t, recs in sorted(by_task.items())]


def load_traces(path: str | os.PathLike) -> list[tuple[Sample, str, bool]]:
    """``(sample, trace_text, is_fallback)`` for every kept trace in a ``traces.jsonl`` (or its stage directory).

    Read only: a torn last line (a run killed mid-write) is skipped; dropped questions give nothing.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRACES
    if not path.exists():
        raise StageInputError(f"{path}: no such file; run 'openrft synthesize' first")
    raw = path.read_text(encoding="utf-8")
    lines = raw.splitlines()
    out: list[tuple[Sample, str, bool]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) and not raw.endswith("\n"):
                break
            raise StageInputError(f"{path}:{i}: corrupt line; delete the file to redo the synthesize stage") from None
        try:
            sample = Sample.from_dict(rec["sample"])
            out += [(sample, t["text"], bool(rec["fallback"])) for t in rec["traces"]]
        except (KeyError, TypeError) as e:
            raise StageInputError(f"{path}:{i}: not a synthesize record (missing field {e})") from None
    return out


def verified_traces(path: str | os.PathLike) -> dict[str, str]:
    """Question id -> its first correct trace (fallbacks left out) from a ``traces.jsonl`` or its stage
    directory: the worked replies few-shot examples show (:meth:`FewShotExamples.with_traces
    <openrft.retrieval.fewshot.FewShotExamples.with_traces>`)."""
    out: dict[str, str] = {}
    for sample, text, fallback in load_traces(path):
        if not fallback:
            out.setdefault(sample.id, text)
    return out


class _Progress:
    """tqdm bar over questions (ETA from closed questions); postfix: round, open questions, completions/s."""

    def __init__(self, total: int, enabled: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="synthesizing", unit="q", disable=not enabled, dynamic_ncols=True)
        self.t0 = time.perf_counter()
        self.sequences = 0
        self.info: dict[str, Any] = {}
        self.last = 0.0

    def round(self, r: int, open_: int) -> None:
        self.info.update(round=r + 1, open=open_)
        self._postfix(force=True)

    def generated(self, done: int, new_tokens: int) -> None:
        self.sequences += done
        self._postfix()

    def closed(self, count: int) -> None:
        self.bar.update(count)

    def _postfix(self, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self.last > 0.5:
            self.last = now
            self.info["seq_s"] = f"{self.sequences / max(now - self.t0, 1e-9):.1f}"
            self.bar.set_postfix(self.info)  # throttled above, so redrawing here is cheap

    def close(self) -> None:
        self.bar.close()
