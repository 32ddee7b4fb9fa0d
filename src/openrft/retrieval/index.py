"""Per-task vector index of training questions for few-shot (ICL) retrieval, OpenRFT section 2.3.1.

The text embedded for a sample is its task's rendered question (``task_for(s).render_question(s)``:
the stem and, for multiple choice, the option lines), the same text the model sees. Search is exact
inner product (``faiss.IndexFlatIP``) on L2-normalised embeddings, i.e. cosine similarity, within
the query's own task (``Sample.task``) only.

A query never returns (no answer leakage, no redundant shots):

* the sample itself (same id);
* its family: its augmented variants and its parent. A sample's family is ``meta["parent_id"]``
  (set by :mod:`openrft.augment`), else the id before a ``#aug`` suffix, else its own id;
* a sample whose question is a duplicate of the query's: same stem and the same set of options,
  compared after whitespace/case folding, so an option-shuffled copy counts as a duplicate.

Among the hits, only the best-scoring member of each family and of each duplicate group is kept,
so k shots are k different problems. Ties are broken by sample id (scores are compared rounded
to 1e-6, so the few-ulp noise of batched encoding does not reorder equal texts): the result does
not depend on the order of the training samples or on faiss' internal tie order.

Asking for more shots than a task can supply (``k`` above the usable count) raises ``ValueError``
naming k, the task and the count; ``allow_fewer=True`` returns what there is instead (and an
empty list for a task with no training samples).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openrft.data.sample import Sample
from openrft.core.rundir import atomic_write_json, atomic_write_text, stable_hash
from openrft.retrieval.embedder import Embedder, embedder_label
from openrft.tasks.base import task_for

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
SAMPLES_FILE = "samples.jsonl"
MANIFEST_FILE = "manifest.json"
_SCORE_DECIMALS = 6
_SPACE = re.compile(r"\s+")


class IndexMismatchError(ValueError):
    """A saved index was built with another embedder, other samples or another format version."""


@dataclass(frozen=True)
class Hit:
    sample: Sample
    score: float  # cosine similarity to the query


def family_id(sample: Sample) -> str:
    """The id shared by a question and its augmented variants.

    >>> s = Sample(id="q1#aug2", task="t", question="?", answer="x")
    >>> family_id(s), family_id(s.replace(meta={"parent_id": "q1"})), family_id(s.replace(id="q7"))
    ('q1', 'q1', 'q7')
    """
    parent = sample.meta.get("parent_id") if isinstance(sample.meta, dict) else None
    return str(parent) if parent else sample.id.split("#aug", 1)[0]


def _norm(text: str) -> str:
    return _SPACE.sub(" ", str(text)).strip().casefold()


def duplicate_key(sample: Sample) -> str:
    """Stem and option set, whitespace/case folded: equal for exact and option-shuffled duplicates.

    >>> a = Sample(id="a", task="t", question="Pick  one.", choices=("x", "y"), answer="A", answer_type="mcq")
    >>> duplicate_key(a) == duplicate_key(a.replace(id="b", question="pick one.", choices=("y", "x"), answer="B"))
    True
    """
    return json.dumps([_norm(sample.question), sorted(_norm(c) for c in sample.choices or ())], ensure_ascii=False)


def samples_hash(samples: Sequence[Sample]) -> str:
    """Hash of a training set, independent of its order."""
    return stable_hash(sorted((s.to_dict() for s in samples), key=lambda d: (d["task"], d["id"])), length=32)


def question_text(sample: Sample) -> str:
    """The text embedded for ``sample``: its task's rendered question (stem and options)."""
    return task_for(sample).render_question(sample)


class _TaskIndex:
    def __init__(self, samples: list[Sample], vectors: np.ndarray):
        import faiss

        self.samples = samples
        self.families = [family_id(s) for s in samples]
        self.dups = [duplicate_key(s) for s in samples]
        self.index = faiss.IndexFlatIP(vectors.shape[1])
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: list[Sample], vecs: np.ndarray, k: int, allow_fewer: bool) -> list[list[Hit]]:
        n = len(self.samples)
        m = min(n, k + 16)
        scores, ids = self.index.search(vecs, m)
        out = []
        for j, q in enumerate(queries):
            row_m, row_s, row_i = m, scores[j], ids[j]
            while True:
                hits, complete = self._pick(q, row_s, row_i, k, row_m == n)
                if complete or row_m == n:
                    break
                row_m = min(n, row_m * 4)
                s2, i2 = self.index.search(vecs[j:j + 1], row_m)
                row_s, row_i = s2[0], i2[0]
            if len(hits) < k and not allow_fewer:
                raise ValueError(
                    f"k={k} few-shot examples asked for sample {q.id!r} of task {q.task!r}, but only {len(hits)} "
                    f"usable training sample(s) remain of the task's {n} (the sample itself, its augmented "
                    "variants/parent and duplicate questions are excluded); lower k or pass allow_fewer=True")
            out.append(hits)
        return out

    def _pick(self, q: Sample, scores: np.ndarray, ids: np.ndarray, k: int, exhaustive: bool) -> tuple[list[Hit], bool]:
        rounded = [round(float(s), _SCORE_DECIMALS) for s in scores]
        order = sorted((-r, self.samples[i].id, i, float(s)) for r, s, i in zip(rounded, scores, ids) if i >= 0)
        seen_fam, seen_dup = {family_id(q)}, {duplicate_key(q)}
        hits: list[Hit] = []
        last = None
        for neg_r, sid, i, s in order:
            if len(hits) == k:
                break
            if sid == q.id or self.families[i] in seen_fam or self.dups[i] in seen_dup:
                continue
            seen_fam.add(self.families[i])
            seen_dup.add(self.dups[i])
            hits.append(Hit(self.samples[i], s))
            last = -neg_r
        # complete when every unseen candidate scores strictly below the last kept hit (ties may outrank by id)
        complete = exhaustive or (len(hits) == k and (k == 0 or rounded[-1] < last))
        return hits, complete


class FewShotIndex:
    """Training samples of one or more tasks, embedded and searchable per task. Build with :meth:`build`."""

    def __init__(self, embedder: Embedder, samples: Sequence[Sample], vectors: np.ndarray, *, hash_: str | None = None):
        if len(samples) != len(vectors):
            raise ValueError(f"{len(samples)} samples but {len(vectors)} vectors")
        self.embedder = embedder
        self.samples_hash = hash_ or samples_hash(samples)
        order = sorted(range(len(samples)), key=lambda i: (samples[i].task, samples[i].id))
        self.samples = [samples[i] for i in order]
        self.vectors = np.asarray(vectors, dtype=np.float32)[order] if len(order) else np.asarray(vectors)
        self._tasks: dict[str, _TaskIndex] = {}
        start = 0
        for end in range(1, len(self.samples) + 1):
            if end == len(self.samples) or self.samples[end].task != self.samples[start].task:
                self._tasks[self.samples[start].task] = _TaskIndex(self.samples[start:end], self.vectors[start:end])
                start = end

    @classmethod
    def build(cls, samples: Sequence[Sample], embedder: Embedder, *, batch_size: int = 64,
              show_progress: bool = False) -> "FewShotIndex":
        """Embed ``samples`` (their rendered questions) and index them per task."""
        samples = list(samples)
        if not samples:
            raise ValueError("no training samples to index for few-shot retrieval")
        seen: set[str] = set()
        for s in samples:
            if s.id in seen:
                raise ValueError(f"duplicate training sample id {s.id!r}; few-shot exclusion works on ids")
            seen.add(s.id)
        vectors = embedder.encode([question_text(s) for s in samples], batch_size=batch_size,
                                  show_progress=show_progress)
        return cls(embedder, samples, vectors)

    @property
    def tasks(self) -> list[str]:
        return list(self._tasks)

    def count(self, task: str) -> int:
        """Training samples indexed for ``task`` (0 when none)."""
        ti = self._tasks.get(task)
        return len(ti.samples) if ti else 0

    def __len__(self) -> int:
        return len(self.samples)

    # ---- querying --------------------------------------------------------------------------------
    def search(self, queries: Sequence[Sample], k: int = 3, *, allow_fewer: bool = False,
               batch_size: int = 64) -> list[list[Hit]]:
        """Per query, up to ``k`` hits with their cosine scores, most similar first (see the module docstring)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        queries = list(queries)
        out: list[list[Hit]] = [[] for _ in queries]
        groups: dict[str, list[int]] = {}
        for j, q in enumerate(queries):
            groups.setdefault(q.task, []).append(j)
        for task, idx in groups.items():  # fail before any encoding
            have = self.count(task)
            if k > have and not allow_fewer:
                where = (f"the index holds {have} training sample(s) of task {task!r}" if have else
                         f"the index holds no training samples of task {task!r} (tasks: {', '.join(self.tasks)})")
                raise ValueError(f"k={k} few-shot examples asked, but {where}; lower k, add training samples of "
                                 "the task, or pass allow_fewer=True")
        if k == 0:
            return out
        for task, idx in groups.items():
            ti = self._tasks.get(task)
            if ti is None:
                continue
            qs = [queries[j] for j in idx]
            vecs = self.embedder.encode([question_text(q) for q in qs], batch_size=batch_size)
            for j, hits in zip(idx, ti.search(qs, vecs, k, allow_fewer)):
                out[j] = hits
        return out

    def query(self, sample: Sample, k: int = 3, *, allow_fewer: bool = False) -> list[Sample]:
        """The ``k`` training samples of ``sample``'s task most similar to it, most similar first."""
        return [h.sample for h in self.search([sample], k, allow_fewer=allow_fewer)[0]]

    def query_many(self, samples: Sequence[Sample], k: int = 3, *, allow_fewer: bool = False,
                   batch_size: int = 64) -> list[list[Sample]]:
        """:meth:`query` for many samples, encoded and searched in batches."""
        return [[h.sample for h in hits]
                for hits in self.search(samples, k, allow_fewer=allow_fewer, batch_size=batch_size)]

    # ---- persistence -----------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"format_version": FORMAT_VERSION, "embedder": self.embedder.name, "dim": int(self.vectors.shape[1]),
                "samples_hash": self.samples_hash, "count": len(self.samples),
                "tasks": {t: len(ti.samples) for t, ti in self._tasks.items()}, "text": "task.render_question"}

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``index.faiss``, ``samples.jsonl`` (index order) and ``manifest.json`` (written last)."""
        import faiss

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / MANIFEST_FILE).unlink(missing_ok=True)  # no manifest = incomplete, whatever a crash leaves
        index = faiss.IndexFlatIP(self.vectors.shape[1])
        index.add(self.vectors)
        tmp = d / f".{INDEX_FILE}.tmp"
        faiss.write_index(index, str(tmp))
        os.replace(tmp, d / INDEX_FILE)
        atomic_write_text(d / SAMPLES_FILE, "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n"
                                                    for s in self.samples))
        atomic_write_json(d / MANIFEST_FILE, self.manifest())
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, embedder: Embedder | str,
             samples: Sequence[Sample] | None = None, *, device: str | None = None) -> "FewShotIndex":
        """Read an index saved by :meth:`save`; refuse one built with another embedder or other samples.

        ``embedder`` is the loaded embedder (used to encode queries) or its name (then it is loaded after
        the manifest check, on ``device``). With ``samples``, the saved training set must be exactly these samples.
        Raises :class:`IndexMismatchError` on a mismatch, ``FileNotFoundError`` when nothing is saved there.
        """
        import faiss

        d = Path(directory)
        if not (d / MANIFEST_FILE).is_file():
            raise FileNotFoundError(f"{d / MANIFEST_FILE}: no saved few-shot index here (or its save did not "
                                    "finish); build one with FewShotIndex.build(...).save(dir)")
        man = json.loads((d / MANIFEST_FILE).read_text())
        if man.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(f"{d}: few-shot index format version {man.get('format_version')!r}, this "
                                     f"openrft reads version {FORMAT_VERSION}; rebuild the index")
        want = embedder.name if isinstance(embedder, Embedder) else embedder_label(embedder)
        if man.get("embedder") != want:
            raise IndexMismatchError(f"{d}: few-shot index built with embedder {man.get('embedder')!r}, not {want!r}; "
                                     "query vectors would not be comparable. Rebuild it or pass that embedder")
        if samples is not None and samples_hash(samples) != man.get("samples_hash"):
            raise IndexMismatchError(f"{d}: few-shot index built from other training samples ({man.get('count')} "
                                     f"saved, hash {man.get('samples_hash')}; given {len(samples)}, hash "
                                     f"{samples_hash(samples)}); rebuild it for these samples")
        saved = [Sample.from_dict(json.loads(line)) for line in (d / SAMPLES_FILE).read_text().splitlines() if line]
        index = faiss.read_index(str(d / INDEX_FILE))
        if samples_hash(saved) != man.get("samples_hash") or index.ntotal != len(saved):
            raise IndexMismatchError(f"{d}: {SAMPLES_FILE} or {INDEX_FILE} do not match {MANIFEST_FILE} (edited or "
                                     "partly overwritten); rebuild the index")
        vectors = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
        if not isinstance(embedder, Embedder):
            from openrft.retrieval.embedder import load_embedder

            embedder = load_embedder(embedder, device=device)
        if embedder.dim != index.d:
            raise IndexMismatchError(f"{d}: index vectors have {index.d} dimensions, embedder {embedder.name!r} "
                                     f"gives {embedder.dim}")
        return cls(embedder, saved, vectors, hash_=man["samples_hash"])
