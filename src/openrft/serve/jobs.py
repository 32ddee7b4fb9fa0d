"""Requests on their way through a scheduler thread, and the scheduler for any :class:`Generator`.

A :class:`Job` is one request's sequences (``len(prompts) * n`` choices). The scheduler thread that owns the
generator reports on it with events that land on the request's asyncio queue: :class:`Tokens` (new tokens of
a choice, streaming requests only), :class:`Done` (a finished choice) and :class:`Failed`. The request side
sets :meth:`Job.cancel` when its client leaves.

:class:`Batcher` serves a generator that only has ``generate`` (an HTTP client, a test double): it takes every
job waiting when the generator frees up and merges those with equal sampling parameters into one call;
seeded sampling jobs run alone. A job runs to its end once started; a cancelled one that has not started is
dropped. The transformers backend gets :class:`~openrft.serve.scheduler.EngineScheduler` instead.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass

from openrft.models.backends.base import Completion, Generator, Prompt, SamplingParams
from openrft.models.backends.hf_batch import TokenLogprob

logger = logging.getLogger(__name__)

SHUTTING_DOWN = "the server is shutting down"


@dataclass(frozen=True)
class Tokens:
    """New tokens of choice ``choice`` (with their logprobs when asked)."""

    choice: int
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Done:
    """Choice ``choice`` finished; ``logprobs`` covers its tokens when asked."""

    choice: int
    completion: Completion
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Failed:
    error: BaseException


Event = Tokens | Done | Failed


class Job:
    """One request's sequences. ``encoded`` holds the prompts' token ids where the scheduler needs them."""

    def __init__(self, prompts: list[Prompt], params: SamplingParams, loop: asyncio.AbstractEventLoop, *,
                 encoded: list[list[int]] | None = None, top_logprobs: int | None = None, stream: bool = False):
        self.prompts, self.params, self.encoded = prompts, params, encoded
        self.top_logprobs, self.stream = top_logprobs, stream
        self.choices = len(prompts) * params.n
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """The client left: the scheduler stops generating for this job (a no-op once it finished)."""
        self._cancelled.set()

    def emit(self, event: Event) -> None:
        """Hand ``event`` to the request (called from the scheduler thread)."""
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the request's event loop is closed: nobody is waiting any more
            pass


class Batcher:
    """Owns a plain generator; merges waiting jobs with equal sampling parameters into one ``generate`` call."""

    def __init__(self, generator: Generator, max_batch_sequences: int = 256, wait_s: float = 0.002):
        self.generator = generator
        self.max_batch_sequences = max_batch_sequences
        self.wait_s = wait_s
        self.calls = 0  # generate calls made, for tests and logs
        self._queue: queue.Queue[Job] = queue.Queue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="openrft-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        if self._closed.is_set():
            raise RuntimeError(SHUTTING_DOWN)
        self._queue.put(job)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=30)
        while True:
            try:
                self._queue.get_nowait().emit(Failed(RuntimeError(SHUTTING_DOWN)))
            except queue.Empty:
                break

    def _take(self) -> list[Job]:
        jobs = [self._queue.get(timeout=0.1)]
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return [job for job in jobs if not job.cancelled]

    def _groups(self, jobs: list[Job]) -> list[list[Job]]:
        groups: list[list[Job]] = []
        open_group: dict[SamplingParams, list[Job]] = {}
        for job in jobs:
            alone = not job.params.greedy and job.params.seed is not None  # batch position would change samples
            group = open_group.get(job.params)
            if alone or group is None or sum(j.choices for j in group) + job.choices > self.max_batch_sequences:
                group = [job]
                groups.append(group)
                if not alone:
                    open_group[job.params] = group
            else:
                group.append(job)
        return groups

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                jobs = self._take()
            except queue.Empty:
                continue
            for group in self._groups(jobs):
                self._run(group)

    def _run(self, group: list[Job]) -> None:
        prompts = [p for job in group for p in job.prompts]
        try:
            self.calls += 1
            out = self.generator.generate(prompts, group[0].params)
        except Exception as err:  # noqa: BLE001 - handed to the waiting request
            if len(group) > 1:  # find out whose request failed
                for job in group:
                    self._run([job])
                return
            group[0].emit(Failed(err))
            return
        start = 0
        for job in group:
            for i, comps in enumerate(out[start: start + len(job.prompts)]):
                for j, completion in enumerate(comps):
                    job.emit(Done(i * job.params.n + j, completion))
            start += len(job.prompts)
