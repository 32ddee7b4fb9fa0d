"""Load :class:`Sample` lists from files: JSONL, JSON, CSV/TSV, parquet, HF ``save_to_disk``.

Two things are decided per file: the *container* (how records are stored: ``jsonl``,
``json``, ``csv``, ``tsv``, ``parquet``, ``hf``) and the *layout* (what a record looks
like, see :mod:`openrft.data.records`). Both are sniffed (file extension, keys of the
first record) unless named. Every error is a :class:`DataError` naming ``file:line``
(``file: row N`` for parquet/HF) and the field at fault.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from openrft.data.bundled import SCIKNOWEVAL_TASKS, bundled_path, get_bundled
from openrft.data.jsonl import read_utf8, utf8_lines
from openrft.data.records import CONVERTERS, LAYOUTS, Context, FieldMap, data_error, sniff_layout
from openrft.data.sample import ANSWER_TYPES, DataError, Sample

CONTAINERS = ("jsonl", "json", "csv", "tsv", "parquet", "hf")
SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
_HF_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


# ---- containers --------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    for lineno, line in utf8_lines(path):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); "
                            "each line must hold one JSON object") from None


def _read_json(path: Path) -> Iterator[tuple[str, Any]]:
    text = read_utf8(path)
    start = len(text) - len(text.lstrip())
    if text[start:start + 1] == "{":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj.get("data"), list):
            raise DataError(f'{path}: field \'data\': expected a list of records or {{"data": [...]}}')
        yield from ((f"{path}: data[{i}]", r) for i, r in enumerate(obj["data"]))
        return
    if text[start:start + 1] != "[":
        raise DataError(f'{path}:1: expected a JSON list of records or {{"data": [...]}}')
    dec, ws = json.JSONDecoder(), re.compile(r"\s*")
    i, line, pos = ws.match(text, start + 1).end(), 1, 0
    if text[i:i + 1] == "]":
        return
    while True:
        line, pos = line + text.count("\n", pos, i), i
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
        yield f"{path}:{line}", obj
        i = ws.match(text, end).end()
        if text[i:i + 1] == ",":
            i = ws.match(text, i + 1).end()
        elif text[i:i + 1] == "]":
            return
        else:
            raise DataError(f"{path}:{1 + text.count(chr(10), 0, i)}: malformed JSON (expected ',' or ']')")


def _read_csv(path: Path, delimiter: str) -> Iterator[tuple[str, Any]]:
    reader = csv.DictReader(io.StringIO(read_utf8(path), newline=""), delimiter=delimiter)
    for row in reader:
        if None in row:
            raise DataError(f"{path}:{reader.line_num}: more cells than header columns")
        yield f"{path}:{reader.line_num}", {k: (None if v == "" else v) for k, v in row.items()}


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield f"{path}: row {i}", row


def _read_hf(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if split is None or split not in ds:
            what = "needs a split name" if split is None else f"has no split {split!r}"
            raise DataError(f"{path}: this DatasetDict {what}; pass split= one of {sorted(ds)}")
        ds = ds[split]
    for i, row in enumerate(ds):
        yield f"{path}[{split}]: row {i}" if split else f"{path}: row {i}", row


def _records(path: Path, container: str, split: str | None) -> Iterator[tuple[str, Any]]:
    if container == "jsonl":
        return _read_jsonl(path)
    if container == "json":
        return _read_json(path)
    if container in ("csv", "tsv"):
        return _read_csv(path, "\t" if container == "tsv" else ",")
    if container == "parquet":
        return _read_parquet(path)
    if container == "hf":
        return _read_hf(path, split)
    raise DataError(f"{path}: unknown container format {container!r}; valid: {', '.join(CONTAINERS)}")


# ---- public loaders --------------------------------------------------------------


def _split_of(path: Path, split: str | None) -> str | None:
    """The split a file holds: given, else its folder's or its own name when that is a split name."""
    if split:
        return split
    return next((n for n in (path.parent.name, path.stem) if n.lower() in SPLIT_NAMES), None)


def _load_file(path: Path, *, container: str | None = None, layout: str | None = None, split: str | None = None,
               field_map: FieldMap | None = None, task: str | None = None, answer_type: str | None = None,
               limit: int | None = None) -> list[Sample]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if container is None:
        if path.is_dir():
            container = "hf"
        elif path.suffix.lower() in _EXT:
            container = _EXT[path.suffix.lower()]
        else:
            raise DataError(f"{path}: cannot tell the format from the extension {path.suffix!r}; "
                            f"pass format= one of {', '.join(CONTAINERS + LAYOUTS)}")
    if answer_type is not None and answer_type not in ANSWER_TYPES:
        raise DataError(f"answer_type={answer_type!r} is unknown; valid: {', '.join(ANSWER_TYPES)}")
    if layout is not None and layout not in LAYOUTS:
        raise DataError(f"{path}: unknown layout {layout!r}; valid: {', '.join(LAYOUTS)}")
    if field_map is not None:
        layout = layout or "generic"
    ctx = Context(stem=path.stem, split=_split_of(path, split) if container != "hf" else split, task=task,
                  answer_type=answer_type, fm=field_map or FieldMap())
    out: list[Sample] = []
    where: dict[str, str] = {}
    for idx, (loc, rec) in enumerate(_records(path, container, split)):
        if limit is not None and len(out) >= limit:
            break
        if not isinstance(rec, dict):
            raise DataError(f"{loc}: expected a JSON object (a record), got {type(rec).__name__}")
        layout = layout or sniff_layout(rec)
        s = CONVERTERS[layout](loc, rec, ctx, idx)
        if s.id in where:
            raise data_error(loc, field_map.id if field_map else "id",
                             f"duplicate id {s.id!r} (first at {where[s.id]}); ids must be unique")
        where[s.id] = loc
        out.append(s)
    if not where and limit != 0:
        raise DataError(f"{path}{f'[{split}]' if container == 'hf' and split else ''}: no samples (the "
                        f"{'dataset' if container == 'hf' else 'file'} holds no records)")
    return out


def load_jsonl(path: str | os.PathLike[str], field_map: FieldMap | None = None, **kw: Any) -> list[Sample]:
    """One JSON object a line; layout sniffed unless ``field_map``/``layout`` is given."""
    return _load_file(Path(path), container="jsonl", field_map=field_map, **kw)


def load_json(path: str | os.PathLike[str], field_map: FieldMap | None = None, **kw: Any) -> list[Sample]:
    """A JSON list of records, or ``{"data": [...]}``."""
    return _load_file(Path(path), container="json", field_map=field_map, **kw)


def load_csv(path: str | os.PathLike[str], field_map: FieldMap | None = None, **kw: Any) -> list[Sample]:
    """CSV (or TSV, by extension) with a header row; empty cells count as missing."""
    p = Path(path)
    return _load_file(p, container="tsv" if p.suffix.lower() == ".tsv" else "csv", field_map=field_map, **kw)


def load_parquet(path: str | os.PathLike[str], field_map: FieldMap | None = None, **kw: Any) -> list[Sample]:
    return _load_file(Path(path), container="parquet", field_map=field_map, **kw)


def load_hf_from_disk(path: str | os.PathLike[str], split: str | None = None,
                      field_map: FieldMap | None = None, **kw: Any) -> list[Sample]:
    """A ``datasets`` Dataset/DatasetDict written with ``save_to_disk``; a DatasetDict needs ``split``."""
    return _load_file(Path(path), container="hf", split=split, field_map=field_map, **kw)


def load_sciknoweval(path: str | os.PathLike[str], split: str | None = None, **kw: Any) -> list[Sample]:
    """SciKnowEval MCQ records: task = file stem; domain/subtask/source/level kept in meta."""
    return _load_file(Path(path), layout="sciknoweval", split=split, **kw)


def load_gsm8k(path: str | os.PathLike[str], split: str | None = None, **kw: Any) -> list[Sample]:
    """GSM8K: answer = number after ``####``; rationale (``<<calc>>`` stripped) in ``meta["rationale"]``."""
    return _load_file(Path(path), layout="gsm8k", split=split, **kw)


def load_svamp(path: str | os.PathLike[str], **kw: Any) -> list[Sample]:
    """SVAMP: question = Body + " " + Question; Answer as canonical number; Equation/Type in meta."""
    return _load_file(Path(path), layout="svamp", **kw)


def _split_dirs(path: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(path.iterdir()) if d.is_dir() and _data_files(d)}


def _data_files(path: Path) -> list[Path]:
    return [f for f in sorted(path.iterdir()) if f.is_file() and f.suffix.lower() in _EXT]


def load_samples(source: str | os.PathLike[str], *, format: str | None = None, split: str | None = None,
                 field_map: FieldMap | None = None, task: str | None = None, answer_type: str | None = None,
                 limit: int | None = None) -> list[Sample]:
    """Load samples from a file, a directory or a bundled dataset name.

    ``format`` is a container (``jsonl json csv tsv parquet hf``) or a layout
    (``generic samples sciknoweval gsm8k svamp reft``); by default both are sniffed. A
    directory is an HF ``save_to_disk`` folder, a ``<split>/<task>.jsonl`` tree (like
    SciKnowEval's; ``split`` picks the subfolder) or a folder of data files, loaded in
    name order. A name such as ``"gsm8k"`` or ``"sciknoweval/all"`` loads bundled data
    (``split`` defaults to ``"test"``). ``limit`` caps the total number of samples.

    >>> len(load_samples("sciknoweval/chemical_calculation", split="train", limit=3))
    3
    """
    path = Path(source)
    if format is not None and format not in CONTAINERS + LAYOUTS:
        raise DataError(f"unknown format {format!r}; valid: {', '.join(CONTAINERS + LAYOUTS)}")
    container = format if format in CONTAINERS else None
    layout = format if format in LAYOUTS else None
    kw: dict[str, Any] = dict(field_map=field_map, task=task, answer_type=answer_type)
    if not path.exists():
        if path.suffix:
            raise DataError(f"{source}: no such file or directory")
        try:
            get_bundled(str(source))
        except DataError as e:
            raise DataError(f"{source}: no such file or directory, and {e}") from None
        return load_bundled(str(source), split=split or "test", limit=limit, **kw)
    if path.is_dir() and not any((path / m).exists() for m in _HF_MARKERS) and container != "hf":
        splits = _split_dirs(path)
        if splits:
            if split is None and len(splits) > 1:
                raise DataError(f"{path}: holds splits {sorted(splits)}; pass split= one of them")
            if split is not None and split not in splits:
                raise DataError(f"{path}: no split folder {split!r}; found {sorted(splits)}")
            split = split or next(iter(splits))
            files = _data_files(splits[split])
        else:
            files = _data_files(path)
        if not files:
            raise DataError(f"{path}: no data files ({', '.join(_EXT)}) here or in split subfolders")
        out: list[Sample] = []
        for f in files:
            left = None if limit is None else limit - len(out)
            if left is not None and left <= 0:
                break
            out += _load_file(f, container=container, layout=layout, split=split, limit=left, **kw)
        _check_unique(out)
        return out
    return _load_file(path, container=container, layout=layout, split=split, limit=limit, **kw)


def has_splits(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` holds separate splits: a bundled name, a ``DatasetDict`` folder, a folder of split folders.
    A single file, a plain ``Dataset`` folder or a folder of data files is one set of samples, whatever the split.

    >>> has_splits("sciknoweval/chemical_calculation"), has_splits(__file__)
    (True, False)
    """
    path = Path(source)
    if not path.exists():
        return not path.suffix  # a bundled name (a missing file fails when it is loaded)
    if not path.is_dir():
        return False
    if any((path / m).exists() for m in _HF_MARKERS):
        return (path / "dataset_dict.json").exists()
    return bool(_split_dirs(path))


def load_bundled(name: str, split: str = "test", *, limit: int | None = None, **kw: Any) -> list[Sample]:
    """Load a bundled dataset (:mod:`openrft.data.bundled`) as samples; ``kw`` goes to the loader (``task``,
    ``answer_type``, ``field_map``; a ``task`` or ``answer_type`` given wins over the dataset's own).

    >>> len(load_bundled("sciknoweval/diffusion_rate_analysis"))
    49
    >>> load_bundled("reft/svamp-pcot", "train", limit=1)[0].answer_type
    'program'
    """
    ds = get_bundled(name)
    kw = {"task": ds.task, "answer_type": ds.answer_type} | {k: v for k, v in kw.items() if v is not None}
    if name == "sciknoweval/all":
        out: list[Sample] = []
        for t in SCIKNOWEVAL_TASKS:
            out += load_samples(bundled_path(f"sciknoweval/{t}", split), format=ds.layout, split=split, **kw)
        return out[:limit] if limit is not None else out
    return load_samples(bundled_path(name, split), format=ds.layout, split=split, limit=limit, **kw)


def load_sources(sources: Sequence[str | os.PathLike[str]], *, split: str | None = None,
                 limit_per_task: int | None = None, **kw: Any) -> list[Sample]:
    """Load several sources (bundled names, files, directories) and keep the first ``limit_per_task`` of each task.

    >>> samples = load_sources(["sciknoweval/retrosynthesis", "svamp"], split="test", limit_per_task=2)
    >>> [s.id for s in samples]
    ['retrosynthesis/test/0', 'retrosynthesis/test/1', 'svamp/chal-1', 'svamp/chal-2']
    """
    out: list[Sample] = []
    seen: dict[str, int] = {}
    for source in sources:
        for s in load_samples(source, split=split, **kw):
            seen[s.task] = seen.get(s.task, 0) + 1
            if limit_per_task is None or seen[s.task] <= limit_per_task:
                out.append(s)
    return out


def _check_unique(samples: Iterable[Sample]) -> None:
    seen: set[str] = set()
    for s in samples:
        if s.id in seen:
            raise DataError(f"duplicate sample id {s.id!r} across files; give each file a distinct task or ids")
        seen.add(s.id)


def save_samples(samples: Iterable[Sample], path: str | os.PathLike[str]) -> Path:
    """Write samples as JSONL (``Sample.to_dict`` per line) atomically: temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
