"""The transformers internals openrft relies on, in one place (``tests/models/test_hf_internals.py`` names them).

Not part of transformers' public API, so each can change between minor versions; the project pins the versions
it was tested with (pyproject), and the test fails loudly on a version that moved one of them:

* ``transformers.cache_utils.DynamicLayer`` (subclassed by the generator's growing KV layer): its
  ``lazy_initialization(key_states, value_states)``, ``is_initialized``, ``keys``/``values``, ``update`` and
  ``batch_select_indices``;
* ``DynamicCache.layer_class_to_replicate``: the class a ``DynamicCache()`` builds its layers from as they fill;
* ``PretrainedConfig._is_quantized``: read by ``from_pretrained``/the Trainer to decide a model is quantized.
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicLayer

__all__ = ["DynamicLayer", "dynamic_cache_of", "mark_dequantized"]


def dynamic_cache_of(layer_class: type[DynamicLayer]) -> Any:
    """A ``DynamicCache`` whose layers are ``layer_class`` (built lazily, one per decoder layer)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layer_class_to_replicate = layer_class
    return cache


def mark_dequantized(config: Any) -> None:
    """Tell transformers a model whose weights were dequantized (GGUF -> fp32) is not quantized any more."""
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config._is_quantized = False
