"""Continuous batching across requests for the transformers backend.

One thread owns a :class:`~openrft.models.backends.hf_batch.DecodeBatch` of at most ``capacity`` rows (the
generator's ``batch_size``) and loops: take new jobs, drop the rows of jobs whose client left, admit waiting
rows into free slots, run one decode step, report new tokens and finished choices. A new request's rows join
the running batch at the next step: nobody waits for a long generation to end.

Slots are shared fairly: each request with work is entitled to ``capacity // requests`` of them (at least one).
Free slots go first to requests under that share, in arrival order, then to whoever still waits. When a
request under its share waits and no slot is free, rows of requests over their share are preempted: taken
out of the batch with what they sampled (the ones with the fewest tokens first, the cheapest to redo) and
prefilled again with those tokens when a slot frees up, so a preempted sequence continues where it stopped.

Each row samples with its own RNG, seeded from the request's seed, its prompt and its sample index, as
``TransformersGenerator.generate`` seeds it: a seeded request gets the samples a direct ``generate`` call gives,
whichever requests share the batch (up to floating-point differences of batched arithmetic).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass, field

from openrft.models.backends.hf import TransformersGenerator
from openrft.models.backends.hf_batch import DecodeRow
from openrft.models.packed import packed_linears
from openrft.serve.jobs import SHUTTING_DOWN, Done, Failed, Job, Tokens

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Running:
    job: Job
    pending: deque[DecodeRow]
    left: int  # choices not finished
    active: int = 0  # rows in the batch
    sent: dict[DecodeRow, int] = field(default_factory=dict)  # tokens reported per row (streaming)


class EngineScheduler:
    """Decodes every request's rows in one running batch (see the module docstring).

    Counters for tests and logs: ``steps`` (decode steps run), ``cancelled`` (requests stopped because their
    client left), ``preempted`` (rows taken out to make room), ``tokens`` (tokens sampled).
    """

    def __init__(self, generator: TransformersGenerator, capacity: int | None = None):
        self.generator = generator
        self.capacity = capacity or generator.batch_size
        self.batch = generator.new_batch()
        self.steps = self.cancelled = self.preempted = self.tokens = 0
        self._inbox: queue.Queue[Job] = queue.Queue()
        self._running: list[_Running] = []
        self._owner: dict[DecodeRow, _Running] = {}
        self._next_key = 0
        self._closed = threading.Event()
        generator.model.eval()
        self._thread = threading.Thread(target=self._loop, name="openrft-decode", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job`` (its ``encoded`` prompts checked by ``generator.encode``)."""
        if self._closed.is_set():
            raise RuntimeError(SHUTTING_DOWN)
        self._inbox.put(job)

    def close(self) -> None:
        """Stop the thread; every job not finished gets :class:`Failed`."""
        self._closed.set()
        self._thread.join(timeout=30)
        self._fail_all(RuntimeError(SHUTTING_DOWN))

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        # the served weights do not change: on CPU the decode thread computes with prepacked linear layers for as
        # long as it runs (openrft.models.packed; TransformersGenerator.generate packs per call)
        with contextlib.ExitStack() as stack:
            if self.generator.prepack:
                try:
                    stack.enter_context(packed_linears(self.generator.model, self.capacity))
                except Exception:  # noqa: BLE001 - a server that decodes unpacked beats one that never answers
                    logger.exception("prepacking the model's linear layers failed; decoding without it")
            self._decode()

    def _decode(self) -> None:
        while not self._closed.is_set():
            try:
                self._take(block=not self._running)
                self._drop_cancelled()
                self._admit()
                if self.batch.rows:
                    finished, new_tokens = self.batch.step()
                    self.steps += 1
                    self.tokens += new_tokens
                    self._report(finished)
            except Exception as err:  # noqa: BLE001 - a failed step fails the requests in it, not the server
                logger.exception("generation failed")
                self._fail_all(err)

    def _take(self, block: bool) -> None:
        jobs: list[Job] = []
        try:
            if block:
                jobs.append(self._inbox.get(timeout=0.1))
            while True:
                jobs.append(self._inbox.get_nowait())
        except queue.Empty:
            pass
        for job in jobs:
            rows = self.generator.rows_for(job.encoded, job.params, job.top_logprobs, key_base=self._next_key)
            self._next_key += len(job.encoded)
            self._running.append(_Running(job, deque(rows), left=len(rows)))

    def _drop_cancelled(self) -> None:
        gone = [r for r in self._running if r.job.cancelled]
        if not gone:
            return
        rows = [row for row in self.batch.rows if self._owner[row].job.cancelled]
        self.batch.discard(rows)
        for row in rows:
            del self._owner[row]
        for r in gone:
            self._running.remove(r)
            self.cancelled += 1
        logger.info("%d request(s) cancelled by their clients; %d row(s) dropped", len(gone), len(rows))

    def _admit(self) -> None:
        waiting = [r for r in self._running if r.pending]
        if not waiting:
            return
        share = max(1, self.capacity // len(self._running))
        owed = sum(min(len(r.pending), max(0, share - r.active)) for r in waiting)
        short = owed - (self.capacity - len(self.batch.rows))
        if short > 0:
            self._preempt(short, share)
        free = self.capacity - len(self.batch.rows)
        picked: list[DecodeRow] = []
        for under_share in (True, False):  # first each request up to its share, then any slot left
            for r in waiting:
                room = max(0, share - r.active) if under_share else len(r.pending)
                for _ in range(min(len(r.pending), room, free - len(picked))):
                    row = r.pending.popleft()
                    r.active += 1
                    self._owner[row] = r
                    picked.append(row)
        self.batch.add(picked)

    def _preempt(self, count: int, share: int) -> None:
        """Take up to ``count`` rows of requests over their share out of the batch, back to their queue."""
        over = {r: r.active - share for r in self._running if r.active > share}
        victims = []
        for row in sorted(self.batch.rows, key=lambda row: len(row.tokens)):
            r = self._owner[row]
            if len(victims) < count and over.get(r, 0) > 0:
                over[r] -= 1
                victims.append(row)
        self.batch.discard(victims)
        for row in reversed(victims):
            r = self._owner.pop(row)
            r.active -= 1
            r.pending.appendleft(row)
        self.preempted += len(victims)

    def _report(self, finished: list[DecodeRow]) -> None:
        for row in self.batch.rows + finished:
            r = self._owner[row]
            sent = r.sent.get(row, 0)
            if r.job.stream and len(row.tokens) > sent:
                r.job.emit(Tokens(self._choice(r, row), tuple(row.tokens[sent:]), tuple(row.logprobs[sent:])))
                r.sent[row] = len(row.tokens)
        for row in finished:
            r = self._owner.pop(row)
            r.active -= 1
            r.left -= 1
            r.job.emit(Done(self._choice(r, row), self.batch.completion(row), tuple(row.logprobs)))
            if r.left == 0:
                self._running.remove(r)

    @staticmethod
    def _choice(r: _Running, row: DecodeRow) -> int:
        return row.prompt_idx * r.job.params.n + row.sample_idx

    def _fail_all(self, err: BaseException) -> None:
        while True:
            try:
                self._inbox.get_nowait().emit(Failed(err))
            except queue.Empty:
                break
        for r in self._running:
            r.job.emit(Failed(err))
        self._running.clear()
        self._owner.clear()
        self.batch = self.generator.new_batch()
