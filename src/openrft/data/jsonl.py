"""Record files other than samples: one JSON object a line, read with errors that name ``file:line``.

:func:`utf8_lines` and :func:`read_utf8` read any text data file (samples too) and name the line and byte of
text that is not UTF-8. Step labels (:mod:`openrft.reward_models.labels`) and outcome labels (:mod:`openrft.reward_models.orm_train`)
are stored this way; each kind brings its own ``from_dict`` that checks one object.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from openrft.core.rundir import atomic_write_text
from openrft.data.sample import DataError

__all__ = ["check_fields", "read_records", "read_utf8", "utf8_lines", "write_records"]

T = TypeVar("T")


def _not_utf8(path: Path, line: int, offset: int, err: UnicodeDecodeError) -> DataError:
    """The error for bytes that are not UTF-8: ``file:line``, their offset in the file, the bytes themselves."""
    return DataError(f"{path}:{line}: not UTF-8 text (byte offset {offset}: {err.object[err.start:err.end]!r}, "
                     f"{err.reason}); save the file as UTF-8")


def utf8_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line of a UTF-8 file, read lazily; bytes that are not UTF-8 raise
    :class:`DataError` naming ``file:line`` and the byte offset in the file."""
    path, offset = Path(path), 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, lineno, offset + err.start, err) from None
            offset += len(raw)


def read_utf8(path: str | os.PathLike) -> str:
    """The whole text of a UTF-8 file; bytes that are not UTF-8 raise :class:`DataError` as in :func:`utf8_lines`."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, 1 + data.count(b"\n", 0, err.start), err.start, err) from None


def check_fields(d: Any, fields: Sequence[str], required: Sequence[str]) -> None:
    """``ValueError`` unless ``d`` is an object holding every ``required`` field and nothing beyond ``fields``.

    >>> check_fields({"a": 1, "c": 2}, ("a", "b"), ("a",))
    Traceback (most recent call last):
    ...
    ValueError: unknown field 'c'; valid: a, b
    """
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object with fields {', '.join(fields)}, got {type(d).__name__}")
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}; valid: {', '.join(fields)}")
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"field {missing[0]!r} is missing")


def read_records(paths: str | os.PathLike | Sequence[str | os.PathLike], parse: Callable[[Any], T], what: str,
                 layout: str) -> list[T]:
    """``parse(object)`` for every non-blank line of every file, in order.

    A missing file, an empty one, a line that is not JSON and a line ``parse`` rejects (``ValueError``) each
    raise :class:`DataError` naming the file (and line); ``what`` names the records ("step examples"),
    ``layout`` what a line must hold.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[T] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"{path}: {what} file not found")
        found = 0
        for lineno, line in utf8_lines(path):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); each line "
                                f"must hold one object {layout}") from None
            try:
                out.append(parse(rec))
            except ValueError as e:
                raise DataError(f"{path}:{lineno}: {e}") from None
            found += 1
        if not found:
            raise DataError(f"{path}: no {what} (the file is empty); each line must hold one object {layout}")
    return out


def write_records(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """``record.to_dict()`` of each record as one JSON line, written atomically."""
    return atomic_write_text(path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records))
