"""Fixtures of the SFT tests (helpers in sft_fixtures.py)."""

from __future__ import annotations

import pytest
from sft_fixtures import short_samples, write_traces


@pytest.fixture
def traces_file(tmp_path):
    return write_traces(tmp_path / "traces.jsonl", short_samples(8), fallback_ids={"add/7"})


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, bundled_tokenizer):
    """Like the shared ``tiny_model_dir`` (random Llama, SmolLM2's real tokenizer and chat template) but with
    hidden size 16: its 49k-token output layer dominates a training step, so this cuts the stage tests' time.
    The larger init range gives the logits enough spread for a rank-4 LoRA to move the loss in a few steps."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = bundled_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=2048, tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    path = tmp_path_factory.mktemp("micro-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
