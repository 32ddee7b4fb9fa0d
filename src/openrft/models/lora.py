"""LoRA helpers shared by the SFT and RL stages: target modules by architecture, attach, load, merge.

``target_modules`` takes a preset or explicit module names:

- ``"all-linear"`` (default): every linear projection of the transformer blocks (attention
  and MLP), found by scanning the model, the output head excluded;
- ``"attention"`` (alias ``"qkvo"``): the attention projections of a known architecture
  (see :data:`ATTENTION_MODULES`);
- ``"mlp"``: the MLP projections of a known architecture (see :data:`MLP_MODULES`);
- a list (or comma-separated string) of module-name suffixes such as ``["q_proj", "v_proj"]``.

Presets are resolved to explicit names before peft sees them, so a run's manifest records
exactly which layers were adapted.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_LLAMA_ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
_LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
#: attention projections per ``config.model_type``
ATTENTION_MODULES: dict[str, tuple[str, ...]] = {
    **{t: _LLAMA_ATTN for t in ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
                                "gemma2", "gemma3_text", "olmo", "olmo2", "granite", "smollm3", "deepseek_v2")},
    "phi3": ("qkv_proj", "o_proj"),
    "gpt2": ("c_attn", "attn.c_proj"),
    "gpt_neox": ("query_key_value", "attention.dense"),
    "falcon": ("query_key_value", "self_attention.dense"),
}
#: MLP projections per ``config.model_type``
MLP_MODULES: dict[str, tuple[str, ...]] = {
    **{t: _LLAMA_MLP for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo",
                               "olmo2", "granite", "smollm3")},
    "phi3": ("gate_up_proj", "down_proj"),
    "gpt2": ("c_fc", "mlp.c_proj"),
    "gpt_neox": ("dense_h_to_4h", "dense_4h_to_h"),
    "falcon": ("dense_h_to_4h", "dense_4h_to_h"),
}
PRESETS = ("all-linear", "attention", "qkvo", "mlp")
ADAPTER_CONFIG = "adapter_config.json"
STACK_FILE = "openrft_adapter.json"


@dataclass
class LoraSettings:
    """LoRA hyper-parameters. Defaults follow OpenRFT's SFT warm-up (rank 4)."""

    rank: int = field(default=4, metadata={"help": "LoRA rank r (OpenRFT: 4)"})
    alpha: float = field(default=8.0, metadata={"help": "LoRA alpha; the update is scaled by alpha / rank"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: str | list[str] = field(
        default="all-linear",
        metadata={"help": "'all-linear' (every block projection), 'attention'/'qkvo', 'mlp', or module names "
                          "(comma-separated), e.g. 'q_proj,v_proj'"})

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def _linear_types() -> tuple[type, ...]:
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2 style "linear" layers

        return (torch.nn.Linear, Conv1D)
    except ImportError:  # pragma: no cover
        return (torch.nn.Linear,)


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Distinct leaf names of the linear layers of ``model``, output head excluded, in first-seen order."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names: dict[str, None] = {}
    for name, module in model.named_modules():
        if isinstance(module, _linear_types()) and module is not output and name.rsplit(".", 1)[-1] != "lm_head":
            names.setdefault(name.rsplit(".", 1)[-1], None)
    return list(names)


def resolve_target_modules(model: torch.nn.Module, spec: str | Sequence[str] = "all-linear") -> list[str]:
    """Turn a preset or a list of names into explicit module-name suffixes that exist in ``model``.

    Raises ``ValueError`` for an unknown preset, an architecture without a table entry, or a
    name that matches no linear layer (listing the names that do exist).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if isinstance(spec, str) and spec in PRESETS:
        if spec == "all-linear":
            names = linear_module_names(model)
            if not names:
                raise ValueError(f"no linear layers found in {type(model).__name__} to put LoRA on")
            return names
        table = MLP_MODULES if spec == "mlp" else ATTENTION_MODULES
        if model_type not in table:
            raise ValueError(
                f"no '{spec}' module list for architecture {model_type!r} (known: {', '.join(sorted(table))}); "
                f"use 'all-linear' or name the modules, e.g. --target-modules "
                f"{','.join(linear_module_names(model)[:4])}"
            )
        names = list(table[model_type])
    else:
        names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
        if not names:
            raise ValueError(f"empty target_modules {spec!r}; valid presets: {', '.join(PRESETS)}, or module names")
    full_names = [n for n, m in model.named_modules() if isinstance(m, _linear_types())]
    for n in names:
        if not any(f == n or f.endswith("." + n) for f in full_names):
            raise ValueError(
                f"LoRA target module {n!r} matches no linear layer of {type(model).__name__}; "
                f"linear layers: {', '.join(linear_module_names(model))} (or a preset: {', '.join(PRESETS)})"
            )
    return names


def lora_config(model: torch.nn.Module, settings: LoraSettings | None = None):
    """A ``peft.LoraConfig`` for causal-LM training of ``model`` with explicit target modules."""
    from peft import LoraConfig, TaskType

    settings = settings or LoraSettings()
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=resolve_target_modules(model, settings.target_modules),
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )


def attach_lora(model: torch.nn.Module, cfg: LoraSettings | object | None = None):
    """Wrap ``model`` in a trainable ``PeftModel`` (``cfg``: :class:`LoraSettings` or a ``peft.LoraConfig``).

    The base weights are frozen; peft injects the LoRA layers into ``model`` in place, so
    keep no other reference to it for inference. ``lora_B`` starts at zero: the wrapped
    model computes exactly what the base model computes until it is trained.
    """
    from peft import get_peft_model

    if cfg is None or isinstance(cfg, LoraSettings):
        cfg = lora_config(model, cfg)
    return get_peft_model(model, cfg)


def resolve_adapter_dir(path: str | os.PathLike) -> Path:
    """The directory holding ``adapter_config.json``: ``path`` itself or its ``adapter/`` (an SFT stage dir)."""
    path = Path(path)
    for candidate in (path, path / "adapter"):
        if (candidate / ADAPTER_CONFIG).is_file():
            return candidate
    raise FileNotFoundError(
        f"{path} holds no LoRA adapter ({ADAPTER_CONFIG} not found there or in {path / 'adapter'}); "
        "give the adapter directory written by 'openrft sft' (<out>/adapter)"
    )


def stacked_base(adapter_dir: str | os.PathLike) -> Path | None:
    """The adapter that ``adapter_dir`` was trained on top of (an RL adapter started from an SFT adapter), if any.

    Such an adapter directory holds ``openrft_adapter.json`` with ``{"stacked_on": "<relative dir>"}``; the
    base adapter is merged into the model before this one is applied.
    """
    import json

    marker = resolve_adapter_dir(adapter_dir) / STACK_FILE
    if not marker.is_file():
        return None
    rel = json.loads(marker.read_text())["stacked_on"]
    return resolve_adapter_dir(marker.parent / rel)


def load_adapter(model: torch.nn.Module, adapter_dir: str | os.PathLike, *, trainable: bool = False,
                 merge: bool = False):
    """Apply a saved LoRA adapter to ``model``; frozen and in eval mode unless ``trainable``.

    A stacked adapter (see :func:`stacked_base`) first merges the adapter it was trained on into ``model``.
    ``merge=True`` (inference only) folds the adapter into the weights and returns the plain model: the same
    function, without two extra small matmuls per adapted layer (generation with an unmerged rank-8 adapter on
    every linear layer of SmolLM2 decodes ~20% slower on CPU).
    """
    from peft import PeftModel

    base = stacked_base(adapter_dir)
    if base is not None:
        model = load_adapter(model, base).merge_and_unload()
    if merge and trainable:
        raise ValueError("load_adapter: a merged adapter cannot be trained; use merge=False with trainable=True")
    peft_model = PeftModel.from_pretrained(model, str(resolve_adapter_dir(adapter_dir)), is_trainable=trainable)
    if merge:
        return peft_model.merge_and_unload().eval()
    return peft_model if trainable else peft_model.eval()


def load_model_with_adapter(name_or_path: str, adapter_dir: str | os.PathLike | None = None, dtype="auto",
                            device=None, merge: bool = True):
    """``(model, tokenizer)`` like :func:`openrft.models.loading.load_model`, with ``adapter_dir`` applied if given
    (merged into the weights unless ``merge=False``: this is the model a generator samples from)."""
    from openrft.models.loading import load_model

    model, tokenizer = load_model(name_or_path, dtype=dtype, device=device)
    if adapter_dir is not None:
        model = load_adapter(model, adapter_dir, merge=merge)
    return model, tokenizer


def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_atomic(save, out_dir: str | os.PathLike) -> Path:
    """Call ``save(tmp_dir)`` and move the result to ``out_dir``, replacing what was there, so a killed save
    never leaves a half-written directory under the final name."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        save(tmp)
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def merge_and_save(peft_model, out_dir: str | os.PathLike, tokenizer=None) -> Path:
    """Fold the LoRA weights into the base model and save a plain transformers checkpoint to ``out_dir``.

    The merge happens in place: ``peft_model``'s base weights change, so call this after the
    adapter itself has been saved. Returns ``out_dir``.
    """
    merged = peft_model.merge_and_unload()

    def save(tmp: Path) -> None:
        merged.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)

    return save_atomic(save, out_dir)
