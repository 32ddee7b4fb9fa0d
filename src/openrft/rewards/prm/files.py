"""Where a PRM checkpoint's files are: the local directory of a spec, and its safetensors shards.

Every scorer format and the format detection read checkpoints through these two, so they sit below all of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from openrft.rewards.prm.base import PRMFormatError

__all__ = ["local_checkpoint", "safetensors_files"]


def local_checkpoint(path: str | os.PathLike) -> Path:
    """A local directory for ``path``: itself, a bundled model, or a hub id from the local HF cache
    (downloaded only when the hub is reachable and ``HF_HUB_OFFLINE`` is unset)."""
    from openrft.models.loading import ModelNotFoundError, resolve_model

    given = Path(path).expanduser()
    if given.is_dir():  # as is: adapter-only checkpoints and stage directories have no config.json
        return given
    resolved = resolve_model(path)  # raises ModelNotFoundError for a missing local path
    p = Path(resolved)
    if p.is_dir():
        return p
    if p.exists():
        raise PRMFormatError(f"{p} is a file; a PRM checkpoint is a directory with config.json and weights")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(resolved))
    except Exception as err:  # offline and not cached, unknown repo, ...
        raise ModelNotFoundError(
            f"PRM {str(path)!r} is not a local directory and could not be fetched from the hub ({type(err).__name__}: "
            f"{err}); offline, a hub id works only if it is in the local Hugging Face cache"
        ) from err


def safetensors_files(path: str | Path) -> list[Path]:
    """The safetensors shards of a checkpoint directory (index order), ``[]`` when it has none."""
    root = Path(path)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [root / f for f in dict.fromkeys(weight_map.values())]
    single = root / "model.safetensors"
    if single.is_file():
        return [single]
    return sorted(root.glob("*.safetensors"))
