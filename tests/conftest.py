"""Shared fixtures: a tiny random Llama for fast tests, the bundled SmolLM2 for end-to-end ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from openrft.models.allocator import keep_freed_memory

keep_freed_memory()  # as every 'openrft' command that trains or generates does on CPU

# the bench scripts the tests load import their shared helpers (bench/benchlib.py) as a script run from bench/ does
sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))

# --doctest-modules would import every folder's conftest.py as a module named "conftest" and fail on the
# second one when one pytest call names several test folders; conftests hold fixtures, not doctests
collect_ignore_glob = ["*/conftest.py"]


def pytest_collection_modifyitems(config, items):
    # OPENRFT_GPU_TESTS_ON_CPU=1 runs the gpu tests on the CPU, to check the tests themselves without a GPU
    if not torch.cuda.is_available() and os.environ.get("OPENRFT_GPU_TESTS_ON_CPU") != "1":
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def bundled_tokenizer():
    from openrft.models.loading import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_tokenizer):
    """A randomly initialised 2-layer Llama with SmolLM2's real tokenizer and chat template, saved to disk."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(bundled_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
        bos_token_id=bundled_tokenizer.bos_token_id, eos_token_id=bundled_tokenizer.eos_token_id,
        pad_token_id=bundled_tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    bundled_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir):
    from openrft.models.backends.hf import TransformersGenerator

    return TransformersGenerator.from_pretrained(str(tiny_model_dir), batch_size=8)


@pytest.fixture(scope="session")
def smollm2():
    """The bundled real model: ``(model, tokenizer)`` in fp32 on CPU."""
    from openrft.models.loading import load_model

    return load_model("smollm2-135m")
