"""A model name that is neither bundled nor a local path fails at once offline, with the bundled names it is close
to; a hub id is still tried online; a model's context is read without loading it."""

from __future__ import annotations

import json
import time

import pytest

from openrft.models import loading
from openrft.models.loading import ModelNotFoundError, check_model, context_window, resolve_model


@pytest.fixture()
def online(monkeypatch):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)


def test_a_typo_offline_is_named_at_once_with_close_bundled_names(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("smollm2-135")
    assert time.perf_counter() - t0 < 1
    assert "'smollm2-135' is neither a bundled model nor a local path" in str(err.value)
    assert "offline (HF_HUB_OFFLINE)" in str(err.value) and "did you mean smollm2-135m" in str(err.value)
    with pytest.raises(ModelNotFoundError, match=r"the path does not exist \(bundled: smollm2-135m\)"):
        check_model("./models/nope")


def test_without_network_a_hub_id_fails_at_once(online, monkeypatch):
    monkeypatch.setattr(loading, "hub_reachable", lambda: False)
    with pytest.raises(ModelNotFoundError, match="the hub cannot be reached"):
        check_model("SmolLM2-135m")


def test_online_a_hub_id_is_still_tried_and_a_cached_one_loads_offline(online, monkeypatch):
    monkeypatch.setattr(loading, "hub_reachable", lambda: True)
    assert resolve_model("org/some-model") == "org/some-model"
    check_model("gpt2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(loading, "_hub_cached", lambda repo, name: "/cache/config.json")
    assert resolve_model("org/some-model") == "org/some-model"


def test_bundled_names_and_local_checkpoints_pass_without_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "_cached_bundled", lambda spec: pytest.fail("converted the bundled model"))
    check_model("smollm2-135m")
    check_model("bundled")
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    check_model(tmp_path)
    assert context_window("smollm2-135m") == 8192 and context_window(tmp_path) == 1024
    assert context_window("org/not-cached") is None
    with pytest.raises(ModelNotFoundError, match="directory without config.json"):
        check_model(tmp_path.parent)
