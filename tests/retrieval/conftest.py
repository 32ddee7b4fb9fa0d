"""The real bundled embedder (all-MiniLM-L6-v2), loaded once for all retrieval tests."""

from __future__ import annotations

import pytest

from openrft.retrieval import Embedder


@pytest.fixture(scope="session")
def embedder():
    from openrft.retrieval import load_embedder

    return load_embedder(device="cpu")


class CountingEmbedder(Embedder):
    """The real embedder, counting the texts it encodes (to see what was cached or reused)."""

    def __init__(self, inner: Embedder):
        super().__init__(inner.model, inner.name)
        self.texts = 0

    def encode(self, texts, batch_size=64, show_progress=False):
        self.texts += len(texts)
        return super().encode(texts, batch_size=batch_size, show_progress=show_progress)


@pytest.fixture()
def counting(embedder):
    return CountingEmbedder(embedder)
