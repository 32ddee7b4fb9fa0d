"""The ``examples_for`` hook every stage takes: top-k similar training Q/A pairs before each question.

OpenRFT (section 2.3.1) prepends the k=3 training questions most similar to the current one,
retrieved with Sentence-BERT, as in-context examples, and blames its ICL drop on prompts that
differed between stages. So build *one* hook and pass the same object to synthesis, SFT, RL and
evaluation; each stage renders it through ``Task.messages(sample, examples_for(sample))``:

>>> examples_for = make_examples_for(train, k=3, index_dir="runs/x/retrieval")   # doctest: +SKIP
>>> evaluate(generator, test, config, examples_for=examples_for)                    # doctest: +SKIP
>>> run_rl(config, train, out, examples_for=examples_for)                           # doctest: +SKIP

Order of the shots: **most similar last**, i.e. the closest example sits right before the
question. Liu et al. (2022, "What Makes Good In-Context Examples for GPT-3?") found this
"reversed" order at least as good as most-similar-first, and it puts the most relevant worked
answer nearest to where the model starts generating. (``FewShotIndex.query`` itself returns
most-similar-first, the usual retrieval order.)

Exclusions (the sample itself, its augmented variants and parent, duplicate questions), per-task
search, tie-breaking and the ``k`` too large error are those of :mod:`openrft.retrieval.index`.

What a shot's reply shows: :meth:`Task.render_example <openrft.tasks.base.Task.render_example>`, i.e.
the dataset's worked solution, else a verified trace attached with :meth:`FewShotExamples.with_traces`
(the pipeline attaches each training question's first correct synthesized trace once synthesis has
run), else the bare answer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from openrft.data.sample import Sample
from openrft.retrieval.embedder import DEFAULT_EMBEDDER, Embedder, load_embedder
from openrft.retrieval.index import MANIFEST_FILE, FewShotIndex, IndexMismatchError, family_id
from openrft.tasks.base import TRACE_KEY

log = logging.getLogger(__name__)


def build_or_load_index(train_samples: Sequence[Sample], embedder: Embedder | str = DEFAULT_EMBEDDER,
                        index_dir: str | os.PathLike | None = None, *, batch_size: int = 64,
                        device: str | None = None, show_progress: bool = False) -> FewShotIndex:
    """The index of ``train_samples``: reused from ``index_dir`` when its manifest matches (same embedder,
    same samples), else built (and saved there, replacing a stale one)."""
    train_samples = list(train_samples)
    if index_dir is not None and (Path(index_dir) / MANIFEST_FILE).is_file():
        try:
            return FewShotIndex.load(index_dir, embedder, samples=train_samples, device=device)
        except IndexMismatchError as e:
            log.warning("rebuilding the few-shot index: %s", e)
    if not isinstance(embedder, Embedder):
        embedder = load_embedder(embedder, device=device)
    index = FewShotIndex.build(train_samples, embedder, batch_size=batch_size, show_progress=show_progress)
    if index_dir is not None:
        index.save(index_dir)
    return index


class FewShotExamples:
    """Callable ``sample -> list[Sample]``: the k nearest training samples, most similar last, cached per sample.

    Use :meth:`prefetch` to retrieve for many samples in one batched pass before a stage runs
    (optional: a single call encodes one question).
    """

    def __init__(self, index: FewShotIndex, k: int = 3, *, allow_fewer: bool = False, batch_size: int = 64,
                 traces: Mapping[str, str] | None = None):
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.index, self.k, self.allow_fewer, self.batch_size = index, k, allow_fewer, batch_size
        self.traces: dict[str, str] = dict(traces or {})
        self._cache: dict[tuple, list[Sample]] = {}

    def with_traces(self, traces: Mapping[str, str]) -> "FewShotExamples":
        """The same retrieval, with ``traces`` (training sample id -> a verified worked reply) attached to the
        shots they belong to (``meta["verified_trace"]``), so shots without a dataset solution show worked
        steps instead of the bare answer. Retrieval results are shared, not recomputed."""
        other = FewShotExamples(self.index, self.k, allow_fewer=self.allow_fewer, batch_size=self.batch_size,
                                traces={**self.traces, **traces})
        other._cache = self._cache
        return other

    def _attach(self, shot: Sample) -> Sample:
        trace = self.traces.get(shot.id)
        return shot if trace is None else shot.replace(meta={**shot.meta, TRACE_KEY: trace})

    @staticmethod
    def _key(sample: Sample) -> tuple:
        # id plus content (Sample hashes id, task, question, answer, type, choices) and family, so two
        # different samples that happen to share an id do not share their shots
        return sample, family_id(sample)

    def prefetch(self, samples: Sequence[Sample]) -> "FewShotExamples":
        todo = list({self._key(s): s for s in samples if self._key(s) not in self._cache}.values())
        if todo:
            found = self.index.query_many(todo, self.k, allow_fewer=self.allow_fewer, batch_size=self.batch_size)
            for s, shots in zip(todo, found):
                self._cache[self._key(s)] = shots[::-1]  # most similar last
        return self

    def __call__(self, sample: Sample) -> list[Sample]:
        key = self._key(sample)
        if key not in self._cache:
            self.prefetch([sample])
        return [self._attach(shot) for shot in self._cache[key]]

    def __repr__(self) -> str:
        return (f"FewShotExamples(k={self.k}, {len(self.index)} training samples, {len(self.traces)} verified traces, "
                f"embedder={self.index.embedder.name!r})")


def make_examples_for(train_samples: Sequence[Sample], k: int = 3, embedder: Embedder | str = DEFAULT_EMBEDDER,
                      index_dir: str | os.PathLike | None = None, *, allow_fewer: bool = False,
                      batch_size: int = 64, device: str | None = None,
                      show_progress: bool = False) -> FewShotExamples:
    """An ``examples_for`` hook over ``train_samples`` for every stage (see the module docstring).

    ``embedder``: a loaded :class:`Embedder` or a name/path for :func:`load_embedder` (default: the
    bundled all-MiniLM-L6-v2). ``index_dir``: where the index is saved and reused from (it is rebuilt
    when the embedder or the training samples changed). ``allow_fewer``: return fewer than ``k``
    shots when a task has too few usable training samples, instead of raising ``ValueError``.
    """
    index = build_or_load_index(train_samples, embedder, index_dir, batch_size=batch_size, device=device,
                                show_progress=show_progress)
    return FewShotExamples(index, k, allow_fewer=allow_fewer, batch_size=batch_size)
