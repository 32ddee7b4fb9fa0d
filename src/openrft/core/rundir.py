"""Run directories: atomic writes, append-only JSONL stores that resume, stage manifests.

Every stage writes into ``runs/<name>/<stage>/``: its outputs and a ``manifest.json``
(config, input hashes, library versions, seed, timings, status). Long stages append one
JSONL line per finished item through :class:`JsonlStore`, so a rerun skips what is done;
a line torn by a kill in mid-write is dropped, never read as a finished item.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: a whole run's record, written by ``openrft run`` (openrft.pipeline.runner), read by reports
RUN_FILE = "run.json"
RUN_FORMAT = 1


class StageInputError(RuntimeError):
    """A stage was given input that the stage before it should have produced."""


class IncompatibleRunError(RuntimeError):
    """A run directory holds outputs made with other settings or by an incompatible openrft version."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if is_dataclass(obj):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serializable object, independent of dict order.

    >>> stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})
    True
    """
    payload = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=_json_default)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (names and bytes, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(str(p.relative_to(path) if path.is_dir() else p.name).encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:length]


def path_fingerprint(value: str | os.PathLike | None) -> str | None:
    """The content hash (:func:`file_hash`) of ``value`` when it names a local file or directory, else None (a hub
    id, a bundled model name, a URL). Stage fingerprints add it for every path among their inputs, so new bytes
    behind an unchanged path (a retrained model, a rewritten adapter) rerun the stage.

    >>> path_fingerprint("smollm2-135m") is None
    True
    """
    if value is None:
        return None
    path = Path(str(value)).expanduser()
    return file_hash(path) if path.exists() else None


def without_legacy_values(settings: dict[str, Any], legacy: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` without each option (a dotted name reaches into nested dicts) whose value is ``legacy[name]``:
    what openrft did before the option existed. A stage run before the option then keeps its identity, and any
    other value changes it. Only for options whose old-behaviour value reproduces the old outputs exactly.

    >>> without_legacy_values({"loss": "ppo", "reward": {"alpha": 1, "x": True}}, {"loss": "ppo", "reward.x": True})
    {'reward': {'alpha': 1}}
    """
    out = dict(settings)
    for name, value in legacy.items():
        *parents, last = name.split(".")
        node = out
        for parent in parents:
            node[parent] = dict(node[parent])
            node = node[parent]
        if last in node and node[last] == value and type(node[last]) is type(value):
            del node[last]
    return out


def pin_local_inputs(settings: dict[str, Any], inputs: dict[str, str], paths: Mapping[str, Any],
                     resolved: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Make a stage's identity follow the bytes of its local inputs rather than where they lie.

    ``paths`` maps a setting (a dotted name reaches into nested dicts: ``reward.prm``) to what it names: a local
    file or directory (hashed as ``resolved[name]`` when given: an adapter's own directory, a PRM's checkpoint), or
    a hub id, bundled model name or URL. Each local one gets its content hash in ``inputs`` under the setting's
    last name and ``"local"`` in ``settings``: new bytes behind the same path rerun the stage, and a copy of the
    stage under another run directory (``openrft run --reuse``) still matches. Anything else stays in ``settings``
    as it is (it names itself). Returns ``{"<last name>_path": path}`` of the local ones, for the manifest's stats.

    >>> settings, inputs = {"model": "smollm2-135m", "reward": {"prm": "judge:smollm2-135m"}}, {}
    >>> pin_local_inputs(settings, inputs, {"model": "smollm2-135m", "reward.prm": "judge:smollm2-135m"}), inputs
    ({}, {})
    """
    resolved = resolved or {}
    shown: dict[str, str] = {}
    for name, value in paths.items():
        fingerprint = path_fingerprint(resolved.get(name, value)) if value is not None else None
        if fingerprint is None:
            continue
        *parents, last = name.split(".")
        node = settings
        for parent in parents:
            node[parent] = dict(node[parent])
            node = node[parent]
        node[last] = "local"
        inputs[last] = fingerprint
        shown[f"{last}_path"] = str(value)
    return shown


def library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("openrft", "torch", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class JsonlStore:
    """Append-only JSONL file of records keyed by ``key`` (default ``"id"``) that survives kill -9.

    ``load()`` returns the finished records; a torn last line is dropped and the file
    rewritten without it. ``append()`` writes whole lines, flushes and fsyncs.
    """

    def __init__(self, path: str | os.PathLike, key: str = "id"):
        self.path = Path(path)
        self.key = key

    def load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        records: dict[str, dict[str, Any]] = {}
        raw = self.path.read_text(encoding="utf-8")
        lines = raw.splitlines()
        torn = bool(raw) and not raw.endswith("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:
                    torn = True
                    break
                raise IncompatibleRunError(
                    f"{self.path}:{i + 1}: corrupt line inside the file (not a torn last line); "
                    "delete the file to redo this stage"
                ) from None
            records[str(rec[self.key])] = rec
        if torn:
            self.rewrite(records.values())
        return records

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, records: Iterable[Mapping[str, Any]]) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n"
                                             for r in records))


@dataclass
class Manifest:
    """What a stage ran with and how it ended; a stage is skipped when a finished manifest matches."""

    stage: str
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # name -> content hash
    seed: int | None = None
    versions: dict[str, str] = field(default_factory=library_versions)
    format_version: int = FORMAT_VERSION
    status: str = "running"  # running | finished
    started: float = field(default_factory=time.time)
    finished: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return stable_hash({"stage": self.stage, "config": self.config, "inputs": self.inputs, "seed": self.seed})

    def save(self, stage_dir: str | os.PathLike) -> Path:
        return atomic_write_json(Path(stage_dir) / MANIFEST, asdict(self) | {"fingerprint": self.fingerprint})

    @classmethod
    def load(cls, stage_dir: str | os.PathLike) -> "Manifest | None":
        path = Path(stage_dir) / MANIFEST
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("fingerprint", None)
        if data.get("format_version") != FORMAT_VERSION:
            raise IncompatibleRunError(
                f"{path} was written by an openrft with run-format {data.get('format_version')} "
                f"(this one: {FORMAT_VERSION}); use a new run directory rather than mixing outputs"
            )
        return cls(**data)


def begin_stage(stage_dir: str | os.PathLike, stage: str, config: Mapping[str, Any], inputs: Mapping[str, str],
                seed: int | None = None, resume_keys: Iterable[str] = (),
                earlier: Iterable[tuple[Mapping[str, Any], Mapping[str, str]]] = ()) -> tuple[Manifest, bool]:
    """Open a stage directory: returns ``(manifest, already_finished)``.

    A finished manifest with the same fingerprint means the stage can be skipped. A manifest
    with another fingerprint, while partial outputs (``resume_keys`` files) exist, raises
    :class:`IncompatibleRunError` rather than mixing outputs of different settings. ``earlier`` lists
    ``(config, inputs)`` pairs an older version of the stage wrote for the same work: a manifest with one of their
    fingerprints is the same stage, and is rewritten with the new identity.
    """
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    new = Manifest(stage=stage, config=dict(config), inputs=dict(inputs), seed=seed)
    old = Manifest.load(stage_dir)
    if old is not None and old.fingerprint != new.fingerprint and any(
            old.fingerprint == Manifest(stage=stage, config=dict(c), inputs=dict(i), seed=seed).fingerprint
            for c, i in earlier):
        old.config, old.inputs = new.config, new.inputs
        old.save(stage_dir)
    if old is not None:
        if old.fingerprint == new.fingerprint:
            if old.status == "finished":
                return old, True
            new.started = old.started
        elif any((stage_dir / k).exists() for k in resume_keys):
            raise IncompatibleRunError(
                f"{stage_dir} holds {'finished' if old.status == 'finished' else 'partial'} '{stage}' outputs "
                "made with other settings or inputs; "
                "use a new run directory or delete this one"
            )
    new.save(stage_dir)
    return new, False


def finish_stage(stage_dir: str | os.PathLike, manifest: Manifest, **stats: Any) -> None:
    manifest.status = "finished"
    manifest.finished = time.time()
    manifest.stats.update(stats)
    manifest.save(stage_dir)
