"""One-token attention as two matrix products (openrft.models.decode_attention): the same outputs as transformers'
SDPA to float rounding, only where it applies, the model's own implementation restored after; the generator
decodes the same tokens with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from openrft.models import decode_attention as da
from openrft.models.backends.base import SamplingParams
from openrft.models.backends.hf import TransformersGenerator

QUESTIONS = ["What is 2+3?", "Name a colour.", "Write a haiku about the sea.", "Count from 1 to 10.",
             "What is the capital of France? Explain in detail."]


def chats(questions):
    return [[{"role": "user", "content": q}] for q in questions]


class _Attn(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _inputs(heads=9, kv_heads=3, q_len=1, kv_len=40, batch=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(batch, heads, q_len, 64, generator=g).to(dtype)
    k = torch.randn(batch, kv_heads, kv_len + 7, 64, generator=g).to(dtype)[:, :, :kv_len]  # a view, as the cache's
    v = torch.randn(batch, kv_heads, kv_len + 7, 64, generator=g).to(dtype)[:, :, :kv_len]
    mask = torch.ones(batch, 1, q_len, kv_len, dtype=torch.bool)
    for r in range(batch):  # left padding of each row's own length
        mask[r, :, :, : 3 * r] = False
    return _Attn(heads // kv_heads).eval(), q, k, v, mask


@pytest.mark.parametrize("heads,kv_heads", [(9, 3), (4, 4), (8, 1)])
@pytest.mark.parametrize("mask_kind", ["bool", "additive", "none"])
def test_one_token_queries_match_sdpa(heads, kv_heads, mask_kind):
    module, q, k, v, mask = _inputs(heads, kv_heads)
    if mask_kind == "additive":
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    elif mask_kind == "none":
        mask = None
    ref, _ = sdpa_attention_forward(module, q, k, v, mask, scaling=0.125)
    out, weights = da.attention(module, q, k, v, mask, scaling=0.125)
    assert weights is None and out.shape == ref.shape == (5, 1, heads, 64)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    default_scale, _ = da.attention(module, q, k, v, mask)  # no scaling given: 1/sqrt(head dim), as SDPA
    torch.testing.assert_close(default_scale, sdpa_attention_forward(module, q, k, v, mask)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["prefill", "bf16", "training", "dropout", "softcap"])
def test_everything_else_goes_to_sdpa(case, monkeypatch):
    module, q, k, v, mask = _inputs(q_len=6 if case == "prefill" else 1,
                                    dtype=torch.bfloat16 if case == "bf16" else torch.float32)
    kwargs = {"dropout": 0.1} if case == "dropout" else {"softcap": 30.0} if case == "softcap" else {}
    module.train(case == "training")
    calls = []
    monkeypatch.setattr("transformers.integrations.sdpa_attention.sdpa_attention_forward",
                        lambda *a, **kw: calls.append(kw) or ("sdpa", None))
    assert da.attention(module, q, k, v, mask, scaling=0.125, **kwargs) == ("sdpa", None)
    assert len(calls) == 1 and calls[0]["scaling"] == 0.125


def test_the_context_swaps_the_implementation_and_restores_it(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    ids = torch.tensor([[0, 0, 5, 9, 14], [1, 5, 9, 14, 3]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.inference_mode():
        prefill = model(input_ids=ids, attention_mask=mask, use_cache=True)
        step = dict(input_ids=torch.tensor([[7], [8]]), attention_mask=torch.cat([mask, torch.ones(2, 1)], 1).long(),
                    past_key_values=prefill.past_key_values)
        plain = model(**step).logits
        prefill = model(input_ids=ids, attention_mask=mask, use_cache=True)  # a fresh cache for the second step
        step["past_key_values"] = prefill.past_key_values
        with da.decode_attention(model) as active:
            assert active and model.config._attn_implementation == da.NAME
            fast = model(**step).logits
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError), da.decode_attention(model):
        raise RuntimeError("a failed decode")
    assert model.config._attn_implementation == "sdpa"
    eager = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    with da.decode_attention(eager) as active:  # only SDPA models switch
        assert not active and eager.config._attn_implementation == "eager"


@pytest.mark.slow
def test_generator_decodes_the_same_tokens_on_bundled_model(smollm2, monkeypatch):
    """Greedy: token for token, rows of other lengths joining and leaving (batch 3); sampled: the same seeded draws
    but for a rare token within float rounding of a boundary. The fast path is the one that ran (and the default
    generator's greedy text is plain ``generate``'s: tests/models/test_hf_backend.py)."""
    model, tokenizer = smollm2
    calls = []
    real = da.attention
    monkeypatch.setitem(da.__dict__, "attention", lambda *a, **kw: calls.append(a[1].shape[2]) or real(*a, **kw))
    out = {}
    for flag in (True, False):
        gen = TransformersGenerator(model, tokenizer, batch_size=3, fast_attention=flag)
        greedy = gen.generate(chats(QUESTIONS), SamplingParams(max_new_tokens=16))
        sampled = gen.generate(chats(QUESTIONS), SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=7))
        out[flag] = [c.token_ids for row in greedy for c in row], [c.token_ids for row in sampled for c in row]
        assert model.config._attn_implementation == "sdpa"
    assert calls and 1 in calls  # one-token queries went through it
    assert out[True][0] == out[False][0]
    assert sum(a == b for a, b in zip(out[True][1], out[False][1])) >= 8  # of 10


def test_the_environment_switch_turns_it_off(monkeypatch, tiny_model_dir):
    monkeypatch.setenv(da.ENV, "0")
    assert TransformersGenerator.from_pretrained(str(tiny_model_dir)).new_batch().fast_attention is False
    monkeypatch.delenv(da.ENV)
    assert TransformersGenerator.from_pretrained(str(tiny_model_dir)).new_batch().fast_attention is True
