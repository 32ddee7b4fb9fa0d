"""load_scorer: spec kinds, format detection order, the marker, and the errors a user sees."""

from __future__ import annotations

import json
import shutil
import sys
import types

import pytest
import torch

from openrft.models.loading import ModelNotFoundError
from openrft.rewards.prm.base import PRMFormatError, ProcessScorer
from openrft.rewards.prm.judge import JudgePRM
from openrft.rewards.prm.loader import FORMATS, MARKER, detect_format, load_scorer, write_marker
from openrft.rewards.prm.math_shepherd import MathShepherdPRM
from openrft.rewards.prm.remote import RemoteScorer

torch.set_num_threads(1)
VH = "openrft.rewards.prm.value_head"


@pytest.fixture
def plain_lm(tmp_path, tiny_model_dir):
    """A causal LM with nothing that marks it as a PRM."""
    path = tmp_path / "plain"
    shutil.copytree(tiny_model_dir, path)
    return path


@pytest.fixture
def fake_value_head(monkeypatch):
    """Stands in for the value-head module (written separately) to check the loader's dispatch to it."""
    module = types.ModuleType(VH)

    class ValueHeadPRM(ProcessScorer):
        name = "value_head"

        def __init__(self, path, device, dtype):
            self.path, self.device, self.dtype = path, device, dtype

        @classmethod
        def from_pretrained(cls, path, device=None, dtype=None):
            return cls(path, device, dtype)

        def score_batch(self, questions, steps):
            return [[0.5] * len(s) for s in steps]

    module.ValueHeadPRM = ValueHeadPRM
    module.is_value_head_checkpoint = lambda path: (path / "v_head.safetensors").is_file()
    monkeypatch.setitem(sys.modules, VH, module)
    return module


def test_unknown_checkpoint_names_path_findings_and_formats(plain_lm, monkeypatch):
    monkeypatch.setitem(sys.modules, VH, None)  # as if the value-head module were not installed
    with pytest.raises(PRMFormatError) as err:
        load_scorer(str(plain_lm))
    msg = str(err.value)
    assert str(plain_lm) in msg and "LlamaForCausalLM" in msg and "no score.* head" in msg
    assert "value-head detection unavailable" in msg
    for fmt in FORMATS:
        assert fmt in msg
    assert MARKER in msg and "format=" in msg
    with pytest.raises(PRMFormatError, match="not available"):
        load_scorer(str(plain_lm), format="value_head")


def test_forced_and_marked_formats(plain_lm):
    assert isinstance(load_scorer(str(plain_lm), format="math_shepherd", device="cpu"), MathShepherdPRM)
    with pytest.raises(PRMFormatError, match="unknown PRM format 'orm'.*value_head, token_class, math_shepherd"):
        load_scorer(str(plain_lm), format="orm")
    write_marker(plain_lm, "math_shepherd", step_tag="<step>", candidates=[" +", " -"])
    assert detect_format(plain_lm) == ("math_shepherd", {"step_tag": "<step>", "candidates": [" +", " -"]})
    scorer = load_scorer(str(plain_lm), device="cpu", batch_size=3)
    assert isinstance(scorer, MathShepherdPRM) and scorer.step_tag == "<step>" and scorer.batch_size == 3
    (plain_lm / MARKER).write_text(json.dumps({"format": "math_shepherd", "tag": "x"}))
    with pytest.raises(PRMFormatError, match="does not take an option"):
        load_scorer(str(plain_lm), device="cpu")
    (plain_lm / MARKER).write_text(json.dumps({"format": "orm"}))
    with pytest.raises(PRMFormatError, match="prm_format.json: expected .*outcome reward model"):
        detect_format(plain_lm)


def test_value_head_detected_first_and_marker_wins(plain_lm, fake_value_head):
    (plain_lm / "v_head.safetensors").write_bytes(b"")
    assert detect_format(plain_lm) == ("value_head", {})
    scorer = load_scorer(str(plain_lm), device="cpu", dtype="fp32", batch_size=4)  # batch_size is not its argument
    assert isinstance(scorer, fake_value_head.ValueHeadPRM)
    assert (scorer.path, scorer.device, scorer.dtype) == (str(plain_lm), "cpu", "fp32")
    write_marker(plain_lm, "math_shepherd")
    assert detect_format(plain_lm) == ("math_shepherd", {})


def test_spec_kinds(tiny_model_dir):
    remote = load_scorer("http://127.0.0.1:9/score", timeout_s=5)
    assert isinstance(remote, RemoteScorer) and remote.url == "http://127.0.0.1:9/score" and remote.timeout_s == 5
    judge = load_scorer(f"judge:{tiny_model_dir}", device="cpu", batch_size=3)
    assert isinstance(judge, JudgePRM) and judge.batch_size == 3
    with pytest.raises(PRMFormatError, match="needs a model"):
        load_scorer("judge:")
    with pytest.raises(PRMFormatError, match="empty PRM spec"):
        load_scorer("  ")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_scorer("./no/such/prm")
    with pytest.raises(ModelNotFoundError, match="could not be fetched"):
        load_scorer("nobody-has/this-prm")  # HF_HUB_OFFLINE=1 in tests: only the local cache is consulted


def test_real_value_head_checkpoint_is_detected_and_loaded(tmp_path, tiny_model_dir):
    from openrft.rewards.prm import value_head as vh
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    backbone = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prm = vh.ValueHeadPRM(vh.ValueHeadModel(backbone, base_model=str(tiny_model_dir)),
                          AutoTokenizer.from_pretrained(tiny_model_dir))
    path = tmp_path / "vh"
    prm.save_pretrained(path)
    assert detect_format(path)[0] == "value_head"
    loaded = load_scorer(str(path), device="cpu", batch_size=2)
    assert isinstance(loaded, vh.ValueHeadPRM) and loaded.batch_size == 2
    steps = ["2 + 3 = 5.", "The answer is 5."]
    assert loaded.score("What is 2 + 3?", steps) == pytest.approx(prm.score("What is 2 + 3?", steps), abs=1e-5)
