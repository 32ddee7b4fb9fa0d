"""Attention for one decoded token per row, as two batched matrix products on CPU.

In a decode step at batch 32 the attention over the cache is a few megaflops per layer, yet torch's SDPA kernel for
CPU (the flash-attention kernel, which transformers' ``sdpa`` implementation reaches with a padding mask) took 21%
of the step on SmolLM2, a third of what the step's matrix multiplies take (bench/README.md, "one decode step,
profiled"): its blocked online softmax is built for long queries. For a query of one token (with grouped-query
attention, the heads that share a key/value head form a query of a few rows) ``softmax(q k^T * scale + mask) v``
computed as two ``matmul`` calls reads each key and value once and takes 40% less time there.

Within :func:`decode_attention`, a model whose attention implementation is ``sdpa`` runs :func:`attention` instead:
the two products for one-token queries of fp32 CPU tensors, transformers' own SDPA for everything else (prefill,
training forwards, other dtypes and devices, dropout, soft-capping, attention sinks). Masks are built exactly as
for ``sdpa``. The result is the same softmax summed in another order: outputs agree to float rounding (greedy
decoding token for token on the bundled model, tests), not bit for bit. ``OPENRFT_DECODE_ATTENTION=0`` turns it
off.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from collections.abc import Iterator

import torch

#: the attention implementation's name in transformers' ``AttentionInterface``
NAME = "openrft_decode"

#: environment variable: ``0`` keeps transformers' SDPA while decoding
ENV = "OPENRFT_DECODE_ATTENTION"


def decode_attention_default() -> bool:
    """On unless ``OPENRFT_DECODE_ATTENTION`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _fast(module, query: torch.Tensor, key: torch.Tensor, attention_mask, dropout: float, kwargs: dict) -> bool:
    if query.shape[2] != 1 or query.device.type != "cpu" or query.dtype != torch.float32 or module.training:
        return False
    if dropout or any(kwargs.get(k) is not None for k in ("softcap", "s_aux", "sinks", "position_bias", "cache")):
        return False
    if query.shape[1] % key.shape[1]:
        return False
    return attention_mask is None or (attention_mask.dim() == 4 and attention_mask.shape[1:3] == (1, 1))


def attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask,
              dropout: float = 0.0, scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``query`` ``[B, Hq, T, D]``, ``key``/``value``
    ``[B, Hkv, S, D]``, ``attention_mask`` as ``sdpa`` gets it (boolean, True = attend, or additive); returns
    ``[B, T, Hq, D]``. One-token fp32 CPU queries take the two products; the rest goes to transformers' SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not _fast(module, query, key, attention_mask, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, _, dim = query.shape
    groups = key.shape[1]
    q = query.reshape(batch, groups, heads // groups, dim)  # the heads sharing a key/value head: one query of rows
    scores = torch.matmul(q, key.transpose(-1, -2)).mul_(dim ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores.masked_fill_(~attention_mask, float("-inf"))
        else:
            scores.add_(attention_mask)
    out = torch.matmul(scores.softmax(dim=-1), value)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2), None


def _dispatch(*args, **kwargs):
    return attention(*args, **kwargs)  # looked up at each call, so the registered entry never goes stale


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, _dispatch)
    AttentionMaskInterface.register(NAME, sdpa_mask)


#: per model, its config objects that carry an attention implementation (found once: a decode step asks every step)
_CONFIGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _configs(model) -> list:
    """Every config object of ``model`` (and of its submodules) that carries an attention implementation."""
    if model not in _CONFIGS:
        seen: dict[int, object] = {}
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is not None and hasattr(config, "_attn_implementation_internal"):
                seen.setdefault(id(config), config)
        _CONFIGS[model] = list(seen.values())
    return _CONFIGS[model]


@contextlib.contextmanager
def decode_attention(model) -> Iterator[bool]:
    """Within the block, ``model``'s SDPA attention runs :func:`attention` (see the module docstring); yields
    whether it does (False where no config of the model uses ``sdpa``)."""
    configs = [c for c in _configs(model) if c._attn_implementation_internal == "sdpa"]
    if configs:
        _register()
    try:
        for config in configs:
            config._attn_implementation_internal = NAME
        yield bool(configs)
    finally:
        for config in configs:
            config._attn_implementation_internal = "sdpa"
