"""LoRA helpers: target modules by architecture, a zero-initialised update, adapter round trip, merge."""

from __future__ import annotations

import pytest
import torch

from openrft.models.lora import (
    LoraSettings,
    attach_lora,
    linear_module_names,
    load_adapter,
    merge_and_save,
    resolve_adapter_dir,
    resolve_target_modules,
    trainable_parameters,
)


@pytest.fixture
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


IDS = torch.tensor([[1, 20, 300, 4000, 5]])


def test_target_module_presets_resolve_to_the_llama_projections(tiny):
    assert resolve_target_modules(tiny, "all-linear") == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                          "up_proj", "down_proj"]
    assert "lm_head" not in linear_module_names(tiny)
    assert resolve_target_modules(tiny, "attention") == resolve_target_modules(tiny, "qkvo") == [
        "q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_target_modules(tiny, "mlp") == ["gate_proj", "up_proj", "down_proj"]
    assert resolve_target_modules(tiny, "q_proj, v_proj") == ["q_proj", "v_proj"]


def test_bad_targets_fail_with_the_valid_names(tiny):
    with pytest.raises(ValueError, match=r"'c_attn' matches no linear layer.*q_proj, k_proj"):
        resolve_target_modules(tiny, ["c_attn"])
    tiny.config.model_type = "brand_new_arch"
    with pytest.raises(ValueError, match=r"no 'attention' module list for architecture 'brand_new_arch'"):
        resolve_target_modules(tiny, "attention")
    assert resolve_target_modules(tiny, "all-linear")[0] == "q_proj"  # scanning works for any architecture
    with pytest.raises(ValueError, match="rank must be >= 1"):
        LoraSettings(rank=0)


def test_attached_lora_starts_as_the_base_model_and_round_trips(tiny, tmp_path):
    with torch.no_grad():
        base_logits = tiny(IDS).logits.clone()
    model = attach_lora(tiny, LoraSettings(rank=4, alpha=8, target_modules="attention"))
    trainable, total = trainable_parameters(model)
    lora = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == sum(p.numel() for p in lora.values()) and 0 < trainable < total / 10
    assert all("lora_" in n for n in lora) and {n.split(".")[-2] for n in lora} == {"default"}
    assert all(torch.count_nonzero(p) == 0 for n, p in lora.items() if "lora_B" in n)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(IDS).logits, base_logits)
        for n, p in lora.items():
            if "lora_B" in n:
                p.normal_(std=0.5)
        tuned = model(IDS).logits.clone()
    assert not torch.allclose(tuned, base_logits)

    model.save_pretrained(tmp_path / "sft" / "adapter")
    assert resolve_adapter_dir(tmp_path / "sft") == tmp_path / "sft" / "adapter"
    from transformers import AutoModelForCausalLM

    merged_dir = merge_and_save(model, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(IDS).logits, tuned, atol=1e-4, rtol=1e-4)


def test_load_adapter_applies_saved_weights_frozen(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    def base():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    model = attach_lora(base(), LoraSettings(rank=2))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
        want = model.eval()(IDS).logits
    model.save_pretrained(tmp_path / "adapter")
    loaded = load_adapter(base(), tmp_path / "adapter")
    assert trainable_parameters(loaded)[0] == 0 and not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, want)
    with pytest.raises(FileNotFoundError, match="holds no LoRA adapter"):
        resolve_adapter_dir(tmp_path / "nowhere")
