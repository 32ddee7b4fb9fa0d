"""oneDNN-prepacked linear layers for decoding on CPU.

A decode step at batch 32 is ~75% matrix multiplies (bench/README.md, "one decode step, profiled"), and with a few
dozen rows ``F.linear``'s GEMM runs well below the CPU's peak. oneDNN's linear on a weight reordered once into its
blocked layout runs the same products faster on this project's CPU (one thread, 32 rows: 1.2-1.4x for SmolLM2's
layers, 1.8x for its 49k-row LM head; bench/README.md, "prepacked linear layers"). Within :func:`packed_linears`
every fp32 ``nn.Linear`` on CPU (a LoRA layer's base layer and its adapter matrices too) computes with such a copy of
its weight, made on entry and dropped on exit, so weights changed between calls (an RL step, a LoRA merge) are
always the ones used. The products are the same, summed in another order: outputs agree to float rounding (greedy
decoding token for token on the bundled model, tests), not bit for bit. ``OPENRFT_PREPACK=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch
from torch import nn

#: environment variable: ``0`` turns prepacking off everywhere (``TransformersGenerator(prepack=False)`` per generator)
ENV = "OPENRFT_PREPACK"


def prepack_default() -> bool:
    """On unless ``OPENRFT_PREPACK`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def available() -> bool:
    """Whether this torch build has oneDNN's prepacked linear (CPU builds of torch 2.x do)."""
    ops = torch.ops.mkldnn
    return torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight") and hasattr(
        ops, "_linear_pointwise")


def _packable(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (type(module) is nn.Linear and isinstance(weight, torch.Tensor) and weight.device.type == "cpu"
            and weight.dtype == torch.float32 and weight.dim() == 2)


#: packing copies the weights: above this many bytes of fp32 linear weights (a ~0.5B-parameter model) it is skipped
MAX_PACKED_BYTES = 2 << 30


def _packed_forward(packed: torch.Tensor, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and (x.requires_grad or module.weight.requires_grad):
        return nn.functional.linear(x, module.weight, module.bias)  # the packed copy takes no gradient
    return torch.ops.mkldnn._linear_pointwise(x, packed, module.bias, "none", [], "")


@contextlib.contextmanager
def packed_linears(model: nn.Module, rows: int = 32) -> Iterator[int]:
    """Within the block, ``model``'s fp32 CPU ``nn.Linear`` layers compute with oneDNN-prepacked weights (laid out for
    about ``rows`` rows at a time). For inference: where a gradient is being recorded, a layer computes as it
    always does. Yields how many layers were packed (0 where this torch has no oneDNN, nothing is fp32 on CPU, or
    the weights are over :data:`MAX_PACKED_BYTES`, as the copies would double them)."""
    patched: list[nn.Module] = []
    layers = [m for m in model.modules() if _packable(m) and "forward" not in vars(m)]
    try:
        if available() and sum(m.weight.numel() * 4 for m in layers) <= MAX_PACKED_BYTES:
            with torch.no_grad():
                for module in layers:
                    packed = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), rows)
                    module.forward = functools.partial(_packed_forward, packed, module)
                    patched.append(module)
        yield len(patched)
    finally:
        for module in patched:
            del module.forward
