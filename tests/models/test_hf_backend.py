"""The transformers backend: same greedy text as ``model.generate``, batch-invariant seeded sampling; prepacked
linear layers: the same greedy text and sampling distribution, layers restored, a LoRA model's current weights."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from openrft.models import packed
from openrft.models.backends import hf
from openrft.models.backends.base import SamplingParams
from openrft.models.backends.hf import TransformersGenerator, render_prompt

QUESTIONS = [
    "What is 2+3?",
    "Name a colour.",
    "Write a haiku about the sea.",
    "What is the capital of France? Explain in detail.",
    "Count from 1 to 10.",
]


def chats(qs):
    return [[{"role": "user", "content": q}] for q in qs]


def reference_greedy(model, tokenizer, prompt, max_new_tokens):
    ids = torch.tensor([render_prompt(tokenizer, prompt)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_greedy_matches_generate_on_bundled_model_with_refill(smollm2):
    model, tokenizer = smollm2
    # batch 2 forces rows to finish, leave, and be refilled with prompts of other lengths
    gen = TransformersGenerator(model, tokenizer, batch_size=2)
    out = gen.generate(chats(QUESTIONS), SamplingParams(max_new_tokens=24))
    lengths = set()
    for prompt, (completion,) in zip(chats(QUESTIONS), out):
        assert completion.text == reference_greedy(model, tokenizer, prompt, 24)
        lengths.add(completion.num_tokens)
    assert len(lengths) > 1, "prompts should finish at different lengths"


def test_shapes_n_and_finish_reasons(tiny_generator):
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=7, seed=3)
    out = tiny_generator.generate(chats(QUESTIONS[:3]), params)
    assert [len(r) for r in out] == [3, 3, 3]
    for row in out:
        for c in row:
            assert c.num_tokens <= 7
            assert c.finish_reason in {"stop", "length"}
            assert (c.finish_reason == "length") == (c.num_tokens == 7)


def test_seeded_sampling_does_not_depend_on_batch_size(tiny_model_dir):
    a = TransformersGenerator.from_pretrained(str(tiny_model_dir), batch_size=8)
    b = TransformersGenerator(a.model, a.tokenizer, batch_size=2)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=11)
    prompts = chats(QUESTIONS)
    out_a = a.generate(prompts, params)
    texts = lambda out: [[c.text for c in row] for row in out]  # noqa: E731
    assert texts(out_a) != texts(a.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=12)))
    assert texts(out_a) == texts(b.generate(prompts, params))
    assert out_a[0][0].text != out_a[0][1].text or out_a[1][0].text != out_a[1][1].text


def test_greedy_is_deterministic_and_ignores_seed(tiny_generator):
    p = chats(QUESTIONS[:2])
    a = tiny_generator.generate(p, SamplingParams(max_new_tokens=5, seed=1))
    b = tiny_generator.generate(p, SamplingParams(max_new_tokens=5, seed=2))
    assert [r[0].text for r in a] == [r[0].text for r in b]


def test_stop_strings_cut_the_text(tiny_generator):
    out = tiny_generator.generate(["a b c"], SamplingParams(max_new_tokens=40, temperature=1.0, seed=0))
    text = out[0][0].text
    assert len(text) > 2
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut = tiny_generator.generate(["a b c"], SamplingParams(max_new_tokens=40, temperature=1.0, seed=0, stop=(stop,)))
    assert stop not in cut[0][0].text
    assert text.startswith(cut[0][0].text)


def test_prompt_longer_than_context_is_a_clear_error(tiny_generator):
    with pytest.raises(ValueError, match="context"):
        tiny_generator.generate(["word " * 3000], SamplingParams(max_new_tokens=4))


def test_empty_prompt_is_a_clear_error(tiny_generator):
    with pytest.raises(ValueError, match="empty"):
        tiny_generator.generate([""], SamplingParams(max_new_tokens=4))


def test_bad_sampling_params():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="n must"):
        SamplingParams(n=0)


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_batched_sampler_draws_from_the_distribution(top_p):
    """sample_next's one inverse-CDF draw per row matches the (nucleus-truncated) softmax it samples from,
    never picks a zero-probability token, and gives the same token for the same row seed."""
    from openrft.models.backends.hf_batch import DecodeRow as _Row, sample_next

    logits = torch.log(torch.tensor([[0.5, 0.0, 0.2, 0.3], [0.05, 0.05, 0.6, 0.3]]))
    params = SamplingParams(temperature=1.0, top_p=top_p, seed=0)
    draws = 4000
    counts = torch.zeros(2, 4)
    rows = [_Row(0, 0, torch.Generator().manual_seed(1)), _Row(1, 0, torch.Generator().manual_seed(2))]
    for _ in range(draws):
        tok = sample_next(logits, rows, params)
        counts[0, tok[0]] += 1
        counts[1, tok[1]] += 1
    expected = torch.softmax(logits, dim=-1)
    if top_p < 1.0:  # keep the smallest top set reaching top_p, renormalised
        expected = torch.tensor([[0.5 / 0.8, 0.0, 0.0, 0.3 / 0.8], [0.0, 0.0, 0.6 / 0.9, 0.3 / 0.9]])
    freq = counts / draws
    assert counts[0, 1] == 0  # zero probability: never drawn
    assert torch.allclose(freq, expected, atol=0.03), (freq, expected)
    again = [_Row(0, 0, torch.Generator().manual_seed(1)), _Row(1, 0, torch.Generator().manual_seed(2))]
    first = [_Row(0, 0, torch.Generator().manual_seed(1)), _Row(1, 0, torch.Generator().manual_seed(2))]
    assert sample_next(logits, again, params).tolist() == sample_next(logits, first, params).tolist()


def test_adapters_on_the_bundled_model_name_its_hub_id_as_their_base(tmp_path):
    """Not the local cache path it was loaded from: the adapter then loads with peft on another machine."""
    import json

    from peft import LoraConfig, get_peft_model

    from openrft.models.loading import load_model

    model, _ = load_model("smollm2-135m", device="cpu")
    assert model.name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


# ------------------------------------------------------------------ prepacked linear layers
needs_onednn = pytest.mark.skipif(not packed.available(), reason="this torch has no oneDNN prepacked linear")


@needs_onednn
def test_packed_layers_compute_the_same_products_and_are_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 8, bias=False))
    x = torch.randn(5, 3, 64)
    with torch.inference_mode():
        plain = model(x)
        with packed.packed_linears(model, rows=15) as count:
            assert count == 2 and all("forward" in vars(m) for m in (model[0], model[2]))
            fast = model(x)
    assert not any("forward" in vars(m) for m in model.modules())
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    plain_grad = torch.autograd.grad(model(x).sum(), model[0].weight)[0]
    with packed.packed_linears(model):  # where a gradient is recorded, layers compute as they always do
        torch.testing.assert_close(torch.autograd.grad(model(x).sum(), model[0].weight)[0], plain_grad)
    with packed.packed_linears(model.to(torch.bfloat16)) as count:  # only fp32 layers are packed
        assert count == 0


@needs_onednn
def test_greedy_with_packed_layers_matches_plain_generate_on_bundled_model(smollm2, monkeypatch):
    model, tokenizer = smollm2
    monkeypatch.setattr(hf, "PREPACK_MIN_TOKENS", 0)
    packed_layers = []
    real = hf.packed_linears

    @contextlib.contextmanager
    def spy(*args, **kwargs):
        with real(*args, **kwargs) as count:
            packed_layers.append(count)
            yield count

    monkeypatch.setattr(hf, "packed_linears", spy)
    gen = TransformersGenerator(model, tokenizer, batch_size=3, prepack=True)
    out = gen.generate(chats(QUESTIONS), SamplingParams(max_new_tokens=24))
    assert packed_layers == [sum(type(m) is nn.Linear for m in model.modules())]  # every layer, the LM head too
    for prompt, (completion,) in zip(chats(QUESTIONS), out):
        assert completion.text == reference_greedy(model, tokenizer, prompt, 24)


@needs_onednn
def test_sampling_with_packed_layers_draws_from_the_same_distribution(smollm2, monkeypatch):
    """The next-token distributions agree to float rounding, so seeded samples agree but for a rare token whose
    draw falls within that rounding of a boundary (then the rest of that reply differs)."""
    model, tokenizer = smollm2
    with torch.inference_mode():
        for prompt in chats(QUESTIONS):
            ids = torch.tensor([render_prompt(tokenizer, prompt)])
            p = model(ids).logits[0, -1].softmax(-1)
            with packed.packed_linears(model, rows=1):
                q = model(ids).logits[0, -1].softmax(-1)
            assert 0.5 * (p - q).abs().sum() < 1e-4  # total variation
    monkeypatch.setattr(hf, "PREPACK_MIN_TOKENS", 0)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=16, seed=7)
    texts = [[c.text for row in TransformersGenerator(model, tokenizer, batch_size=8, prepack=flag)
              .generate(chats(QUESTIONS), params) for c in row] for flag in (True, False)]
    assert sum(a == b for a, b in zip(*texts)) >= 12  # of 15 (14 on this torch)


@needs_onednn
def test_a_lora_model_packs_its_current_weights(tiny_model_dir):
    """A LoRA layer's base layer and adapter matrices are packed on entry, so weights that moved since (an RL step)
    are the ones used."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    for _ in range(2):
        with torch.inference_mode():
            plain = model(ids).logits
            with packed.packed_linears(model) as count:
                assert count == sum(type(m) is nn.Linear for m in model.modules())
                fast = model(ids).logits
        torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)
        with torch.no_grad():  # the adapter moves, as an optimizer step moves it
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.add_(0.5)


@needs_onednn
def test_the_environment_switch_turns_it_off(monkeypatch, tiny_model_dir):
    monkeypatch.setenv(packed.ENV, "0")
    assert TransformersGenerator.from_pretrained(str(tiny_model_dir)).prepack is False
    monkeypatch.delenv(packed.ENV)
    assert TransformersGenerator.from_pretrained(str(tiny_model_dir)).prepack is True


# ------------------------------------------------------------------ shared-prefix prefill on the bundled model
def test_step_prefixes_with_a_shared_prompt_decode_as_whole_prompts_on_bundled_model(smollm2):
    """PRM labelling's prompts (a few-shot question's prompt + a reply up to each step) prefill their common
    prompt once: greedy continuations are token for token those of prefilling each whole, and each sampled
    token's log-probability agrees to float rounding."""
    from openrft.data.loaders import load_bundled
    from openrft.models.backends.hf_batch import shared_prefixes
    from openrft.reward_models.labels import continuation_prompt
    from openrft.tasks import task_for

    model, tokenizer = smollm2
    train = load_bundled("multistep", split="train")
    sample, shots = train[3], train[:3]
    chat = task_for(sample).messages(sample, shots)
    steps = ["First, 4 * 5 = 20.", "First, 4 * 5 = 20.\nThen 20 + 3 = 23.", "We start with 7."]
    prompts = [continuation_prompt(tokenizer, chat, s) for s in steps] + chats(QUESTIONS[:1])
    encoded = TransformersGenerator(model, tokenizer).encode(prompts)
    assert sorted(len(m) for _, m in shared_prefixes(encoded)) == [1, 3]  # the three step prefixes share
    outs = {}
    for share in (True, False):
        gen = TransformersGenerator(model, tokenizer, batch_size=8, share_prefixes=share)
        greedy = gen.generate(prompts, SamplingParams(max_new_tokens=20))
        batch = gen.new_batch()
        rows = gen.rows_for(encoded, SamplingParams(n=2, temperature=1.0, seed=5, max_new_tokens=12),
                            top_logprobs=1)
        batch.add(rows)
        while batch.rows:
            batch.step()
        outs[share] = greedy, rows
    assert outs[True][0] == outs[False][0]
    for a, b in zip(outs[True][1], outs[False][1]):
        n = next((k for k, (x, y) in enumerate(zip(a.tokens, b.tokens)) if x != y), len(a.tokens))
        assert n >= 1  # a boundary draw may part them later; up to there, the same distribution
        for (lp_a, _), (lp_b, _) in zip(a.logprobs[:n], b.logprobs[:n]):
            assert abs(lp_a - lp_b) < 1e-3
