"""On-disk cache of generation results, one small JSON file per key.

Layout: ``<root>/<key[:2]>/<key>.json``. Each entry is written to a temporary file in the
same directory and moved into place with ``os.replace``, so a reader (another thread, another
process, a rerun after ``kill -9``) sees either the whole entry or none of it. Entries that
cannot be read back (truncated by a crash of the file system, edited by hand) count as
misses and are overwritten on the next write.

>>> import tempfile
>>> cache = ResponseCache(tempfile.mkdtemp())
>>> key = cache_key({"model": "m", "prompt": "2+2=", "sample": 0})
>>> cache.get(key) is None
True
>>> cache.put(key, {"text": "4"})
>>> cache.get(key)
{'text': '4'}
>>> key == cache_key({"sample": 0, "prompt": "2+2=", "model": "m"})  # key order does not matter
True
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

CACHE_FORMAT_VERSION = 1


def cache_key(material: Any) -> str:
    """A stable hex digest of JSON-serialisable ``material`` (dict key order does not matter)."""
    blob = json.dumps(
        {"v": CACHE_FORMAT_VERSION, "m": material}, sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """A directory of JSON entries keyed by :func:`cache_key` digests; safe across threads and processes."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            with open(self.path(key), encoding="utf-8") as f:
                value = json.load(f)
        except (OSError, ValueError):  # missing, or unreadable: a miss either way
            return None
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{key[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(value, f, ensure_ascii=False)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json"))

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.root)!r})"
