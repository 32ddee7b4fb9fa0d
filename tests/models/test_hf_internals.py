"""What openrft relies on inside transformers (openrft.models.hf_internals), checked on the installed version.

A failure here after a transformers upgrade names the internal that moved; fix the adapter module, not its users.
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache, PretrainedConfig

from openrft.models.hf_internals import DynamicLayer, dynamic_cache_of, mark_dequantized


def test_dynamic_layer_has_the_hooks_the_growing_layer_overrides():
    for name in ("lazy_initialization", "update", "batch_select_indices"):
        assert callable(getattr(DynamicLayer, name, None)), f"DynamicLayer.{name} is gone"
    assert list(inspect.signature(DynamicLayer.lazy_initialization).parameters)[1:3] == ["key_states", "value_states"]
    layer = DynamicLayer()
    assert layer.is_initialized is False
    k = v = torch.zeros(1, 2, 3, 4)
    keys, values = layer.update(k, v)
    assert layer.is_initialized and keys.shape == (1, 2, 3, 4) and layer.keys is keys and layer.values is values


def test_a_dynamic_cache_builds_its_layers_from_layer_class_to_replicate():
    class Marked(DynamicLayer):
        pass

    assert hasattr(DynamicCache(), "layer_class_to_replicate")
    cache = dynamic_cache_of(Marked)
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), layer_idx=0)
    assert isinstance(cache.layers[0], Marked) and cache.get_seq_length() == 3


def test_a_dequantized_config_is_not_quantized():
    config = PretrainedConfig()
    config.quantization_config = {"quant_method": "gguf"}
    mark_dequantized(config)
    assert not hasattr(config, "quantization_config") and config._is_quantized is False
