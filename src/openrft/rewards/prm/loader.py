"""``load_scorer(spec)``: one entry point for every process scorer.

``spec`` is one of:

* ``http://...`` / ``https://...`` -- a :class:`~openrft.rewards.prm.remote.RemoteScorer`;
* ``judge:<model>`` -- a :class:`~openrft.rewards.prm.judge.JudgePRM` on any chat model
  (a checkpoint, a hub id, or a bundled name such as ``smollm2-135m``);
* a checkpoint (directory or hub id) whose format is detected, in this order:

  1. a ``prm_format.json`` marker, ``{"format": "value_head"|"token_class"|"math_shepherd", ...}``
     (other keys are passed to the scorer, e.g. ``"step_tag"`` or ``"candidates"``); the marker wins;
  2. ``value_head`` -- Skywork-o1-Open-PRM style, as recognised by
     ``openrft.rewards.prm.value_head.is_value_head_checkpoint``;
  3. ``token_class`` -- Qwen2.5-Math-PRM style: ``architectures`` naming a ``ProcessRewardModel``,
     or ``score.*`` head tensors with 2 outputs and a tokenizer that has ``<extra_0>``;
  4. ``math_shepherd`` -- a causal LM whose tokenizer encodes the step tag ``ки`` as one token.

``format=`` forces a format; an undetectable checkpoint raises :class:`PRMFormatError`
naming the path, what was found, and the formats.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

from openrft.rewards.prm.base import PRMFormatError, ProcessScorer
from openrft.rewards.prm.files import local_checkpoint, safetensors_files

#: the PRM spec naming the recipe's own prm stage (``rl.reward.prm: stage``, ``eval.rerank: prm:stage``)
PRM_FROM_STAGE = "stage"

__all__ = ["FORMATS", "MARKER", "PRM_FROM_STAGE", "detect_format", "load_scorer", "prm_fingerprint", "write_marker"]

logger = logging.getLogger(__name__)

FORMATS = ("value_head", "token_class", "math_shepherd")
MARKER = "prm_format.json"
#: other names a marker may use for a format (the value-head module writes "skywork" for native Skywork checkpoints)
FORMAT_ALIASES = {"skywork": "value_head"}
_SPEC_HELP = "a checkpoint path or hub id, 'judge:<model>' (e.g. judge:smollm2-135m), or an http(s):// URL"


def read_marker(root: Path) -> dict[str, Any] | None:
    marker = root / MARKER
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PRMFormatError(f"{marker}: not valid JSON ({err})") from None
    if isinstance(data, dict) and data.get("format") in FORMAT_ALIASES:
        data = {**data, "format": FORMAT_ALIASES[data["format"]]}
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        hint = " (an outcome reward model scores whole answers, not steps)" if isinstance(data, dict) \
            and data.get("format") == "orm" else ""
        raise PRMFormatError(
            f"{marker}: expected {{\"format\": one of {', '.join(FORMATS)}, ...}}, got {data!r:.200}{hint}")
    return data


def write_marker(path: str | os.PathLike, format: str, **options: Any) -> Path:
    """Write ``prm_format.json`` into checkpoint ``path`` so :func:`load_scorer` needs no detection."""
    if format not in FORMATS:
        raise PRMFormatError(f"unknown PRM format {format!r}; valid: {', '.join(FORMATS)}")
    marker = Path(path) / MARKER
    marker.write_text(json.dumps({"format": format, **options}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return marker


def _value_head_module():
    """``openrft.rewards.prm.value_head`` (written separately), or None when this install lacks it."""
    name = "openrft.rewards.prm.value_head"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name == name:
            return None
        raise


def _head_outputs(root: Path) -> int | None:
    """Outputs of the last ``score.*`` layer in the safetensors (``None`` when there is no such head)."""
    from safetensors import safe_open


    shapes: dict[str, list[int]] = {}
    for file in safetensors_files(root):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key in ("score.weight", "score.2.weight"):
                    shapes[key] = list(f.get_slice(key).get_shape())
    for key in ("score.2.weight", "score.weight"):
        if key in shapes:
            return shapes[key][0]
    return None


def _tokenizer(root: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(root))
    except Exception as err:  # no tokenizer files, or unreadable ones
        logger.debug("no tokenizer in %s: %s", root, err)
        return None


def detect_format(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """``(format, options)`` of the checkpoint at ``path``; options come from the marker file."""
    root = local_checkpoint(path)
    marker = read_marker(root)
    if marker is not None:
        options = {k: v for k, v in marker.items() if k != "format"}
        return marker["format"], options
    found: list[str] = [f"no {MARKER}"]
    vh = _value_head_module()
    if vh is None:
        found.append("value-head detection unavailable (openrft.rewards.prm.value_head is not installed)")
    elif vh.is_value_head_checkpoint(root):
        return "value_head", {}
    config: dict[str, Any] = {}
    if (root / "config.json").is_file():
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
    archs = [str(a) for a in config.get("architectures") or []]
    found.append(f"architectures {archs or 'none'}")
    if any("ProcessRewardModel" in a for a in archs):
        return "token_class", {}
    outputs = _head_outputs(root)
    tok = _tokenizer(root)
    found.append(f"score head with {outputs} outputs" if outputs is not None else "no score.* head tensors")
    if tok is None:
        found.append("no loadable tokenizer")
    else:
        has_sep = len(tok.encode("<extra_0>", add_special_tokens=False)) == 1
        found.append(f"tokenizer {'has' if has_sep else 'lacks'} <extra_0>")
        if outputs == 2 and has_sep:
            return "token_class", {}
        from openrft.rewards.prm.math_shepherd import STEP_TAG

        n_tag = len(tok.encode(STEP_TAG, add_special_tokens=False))
        found.append(f"step tag {STEP_TAG!r} is {n_tag} token(s)")
        if any(a.endswith("ForCausalLM") for a in archs) and n_tag == 1:
            return "math_shepherd", {}
    raise PRMFormatError(
        f"cannot tell the PRM format of {root}: found {'; '.join(found)}. Known formats: {', '.join(FORMATS)}. "
        f"Pass format=... (recipe key prm_format), or write {MARKER} with {{\"format\": ...}} into the checkpoint."
    )


def _call_from_pretrained(cls, root: Path, device, dtype, options: dict[str, Any]):
    params = inspect.signature(cls.from_pretrained).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    dropped = [k for k in options if not takes_any and k not in params]
    if dropped:
        logger.warning("%s.from_pretrained takes no %s; ignored", cls.__name__, dropped)
    kwargs = {k: v for k, v in options.items() if takes_any or k in params}
    try:
        return cls.from_pretrained(str(root), device=device, dtype=dtype, **kwargs)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise PRMFormatError(f"{root}: {cls.__name__} does not take an option given to it ({err}); "
                             f"check the keys of {MARKER} and the scorer arguments") from None


def load_scorer(spec: str, device=None, dtype=None, format: str | None = None, **kwargs: Any) -> ProcessScorer:
    """The process scorer named by ``spec`` (see the module docstring); ``kwargs`` go to the scorer
    (``batch_size``, ``step_tag``, ``candidates``, ``template``, ``timeout_s``, ...)."""
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise PRMFormatError(f"empty PRM spec; give {_SPEC_HELP}")
    spec = str(spec).strip()
    if spec.startswith(("http://", "https://")):
        from openrft.rewards.prm.remote import RemoteScorer

        return RemoteScorer(spec, **kwargs)
    if spec.startswith("judge:"):
        from openrft.rewards.prm.judge import JudgePRM

        model = spec[len("judge:"):].strip()
        if not model:
            raise PRMFormatError("'judge:' needs a model after the colon, e.g. judge:smollm2-135m")
        return JudgePRM.from_pretrained(model, device=device, dtype=dtype, **kwargs)
    if format is not None and format not in FORMATS:
        raise PRMFormatError(f"unknown PRM format {format!r}; valid: {', '.join(FORMATS)} (or a spec {_SPEC_HELP})")
    root = local_checkpoint(spec)
    options: dict[str, Any] = {}
    if format is None:
        format, options = detect_format(root)
        logger.info("PRM %s: %s format", root, format)
    options.update(kwargs)
    if format == "value_head":
        vh = _value_head_module()
        if vh is None:
            raise PRMFormatError(
                f"{root} is a value-head PRM, but openrft.rewards.prm.value_head is not available in this install"
            )
        return _call_from_pretrained(vh.ValueHeadPRM, root, device, dtype, options)
    if format == "token_class":
        from openrft.rewards.prm.token_class import TokenClassPRM

        return _call_from_pretrained(TokenClassPRM, root, device, dtype, options)
    from openrft.rewards.prm.math_shepherd import MathShepherdPRM

    return _call_from_pretrained(MathShepherdPRM, root, device, dtype, options)


def prm_fingerprint(spec: str | os.PathLike | None) -> str | None:
    """What identifies a PRM spec's weights: the content hash of a local checkpoint (a stage directory hashes its
    ``checkpoint/``), else the spec itself (a judge, a URL, a hub id)."""
    if spec is None:
        return None
    from openrft.core.rundir import path_fingerprint
    from openrft.rewards.prm.value_head import resolve_checkpoint_dir

    path = Path(str(spec)).expanduser()
    return path_fingerprint(resolve_checkpoint_dir(path)) if path.exists() else str(spec)
