"""User reward functions in the trl convention: ``fn(prompts, completions, **columns) -> list[float | None]``.

``columns`` are the sample fields as lists, one entry per completion: ``answer``, ``task``,
``id``, ``choices``, ``question``, ``meta`` (functions should take ``**kwargs`` to ignore the
ones they do not use, as in trl). ``None`` means "does not apply to this completion"; it
adds 0.0 to the reward and is logged as not applicable.

A function is named by ``"package.module:fn"`` or ``"path/to/file.py:fn"``; in
:class:`~openrft.rewards.base.RewardSettings` an optional ``@weight`` suffix scales it
(``"my_rewards.py:format_reward@0.2"``).

>>> parse_function_spec("pkg.mod:fn@0.5"), parse_function_spec("rewards/fmt.py:short")
(('pkg.mod', 'fn', 0.5), ('rewards/fmt.py', 'short', 1.0))
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample

__all__ = [
    "FunctionValues",
    "RewardFunction",
    "RewardFunctionError",
    "call_reward_function",
    "load_reward_function",
    "parse_function_spec",
    "sample_columns",
]

SAMPLE_COLUMNS = ("answer", "task", "id", "choices", "question", "meta")


class RewardFunctionError(ValueError):
    """A reward function cannot be loaded, or returned something that is not one reward per completion."""


def parse_function_spec(spec: str) -> tuple[str, str, float]:
    """``(module or file, attribute, weight)`` from ``"target:attr"`` or ``"target:attr@weight"``."""
    if not isinstance(spec, str) or ":" not in spec:
        raise RewardFunctionError(
            f"reward function {spec!r}: expected 'package.module:function' or 'path/to/file.py:function' "
            "(optionally followed by '@weight')"
        )
    target, _, attr = spec.rpartition(":")  # rpartition: a Windows drive letter keeps its colon
    weight = 1.0
    if "@" in attr:
        attr, _, w = attr.partition("@")
        try:
            weight = float(w)
        except ValueError:
            raise RewardFunctionError(f"reward function {spec!r}: weight {w!r} is not a number") from None
        if not math.isfinite(weight):
            raise RewardFunctionError(f"reward function {spec!r}: weight must be finite, got {w!r}")
    if not target or not attr:
        raise RewardFunctionError(f"reward function {spec!r}: empty module/file or function name")
    return target, attr, weight


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise RewardFunctionError(f"reward function {spec!r}: file {path} does not exist")
    resolved = path.resolve()
    name = f"openrft_reward_{resolved.stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise RewardFunctionError(f"reward function {spec!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_module(target: str, spec: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        if err.name and (target == err.name or target.startswith(err.name + ".")):
            raise RewardFunctionError(
                f"reward function {spec!r}: no module named {err.name!r} (is it installed, or on PYTHONPATH? "
                "a file is named by its path, e.g. 'rewards/my_rewards.py:fn')"
            ) from None
        raise  # the module exists but one of its own imports is missing


def load_reward_function(spec: str) -> Callable[..., list[float | None]]:
    """The callable named by ``"package.module:fn"`` or ``"path/to/file.py:fn"`` (``fn`` may be dotted: ``Class.method``)."""
    target, attr, weight = parse_function_spec(spec)
    if "@" in spec.rpartition(":")[2]:
        raise RewardFunctionError(
            f"reward function {spec!r}: the '@weight' suffix belongs in RewardSettings.functions; "
            "load_reward_function takes 'module:fn'"
        )
    module = _import_file(Path(target).expanduser(), spec) if _is_file(target) else _import_module(target, spec)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise RewardFunctionError(
                f"reward function {spec!r}: {getattr(module, '__file__', target)} has no attribute {attr!r}; "
                f"callables there: {', '.join(public[:20]) or 'none'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardFunctionError(f"reward function {spec!r}: {attr!r} is a {type(obj).__name__}, not callable")
    return obj


@dataclass(frozen=True)
class RewardFunction:
    """A loaded reward function, its log name and its weight in the total reward."""

    name: str
    fn: Callable[..., list[float | None]]
    weight: float = 1.0

    @classmethod
    def from_spec(cls, spec: str) -> "RewardFunction":
        _, attr, weight = parse_function_spec(spec)
        base = spec.rpartition("@")[0] if "@" in spec.rpartition(":")[2] else spec
        return cls(name=attr, fn=load_reward_function(base), weight=weight)


@dataclass(frozen=True)
class FunctionValues:
    """What a reward function gave: ``values`` (None replaced by 0.0) and whether each one applied."""

    values: list[float]
    applicable: list[bool]


def sample_columns(samples: Sequence[Sample]) -> dict[str, list[Any]]:
    """The trl-style columns of ``samples``: ``answer``, ``task``, ``id``, ``choices``, ``question``, ``meta``."""
    return {
        "answer": [s.answer for s in samples],
        "task": [s.task for s in samples],
        "id": [s.id for s in samples],
        "choices": [list(s.choices) if s.choices is not None else None for s in samples],
        "question": [s.question for s in samples],
        "meta": [s.meta for s in samples],
    }


def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def call_reward_function(
    fn: Callable[..., Sequence[float | None]],
    prompts: Sequence[Any],
    completions: Sequence[str],
    samples: Sequence[Sample] | None = None,
    *,
    name: str | None = None,
    **columns: Sequence[Any],
) -> FunctionValues:
    """Call ``fn(prompts=..., completions=..., **columns)`` and check it gave one finite reward or None each.

    ``columns`` default to :func:`sample_columns` of ``samples`` (explicit ones override).

    >>> def short(prompts, completions, **kw):
    ...     return [None if not c else float(len(c) < 10) for c in completions]
    >>> call_reward_function(short, ["p", "p", "p"], ["ok", "far too long", ""])
    FunctionValues(values=[1.0, 0.0, 0.0], applicable=[True, True, False])
    """
    name = name or _fn_name(fn)
    n = len(completions)
    if len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts for {n} completions")
    cols: dict[str, Sequence[Any]] = dict(sample_columns(samples)) if samples is not None else {}
    cols.update(columns)
    for key, col in cols.items():
        if len(col) != n:
            raise ValueError(f"column {key!r} has {len(col)} entries for {n} completions")
    out = fn(prompts=list(prompts), completions=list(completions), **{k: list(v) for k, v in cols.items()})
    if out is None or isinstance(out, (str, bytes)) or not hasattr(out, "__len__"):
        raise RewardFunctionError(f"reward function {name!r} returned {type(out).__name__}, expected a list of {n} floats")
    if len(out) != n:
        raise RewardFunctionError(f"reward function {name!r} returned {len(out)} values for {n} completions")
    values: list[float] = []
    applicable: list[bool] = []
    for i, v in enumerate(out):
        if v is None:
            values.append(0.0)
            applicable.append(False)
            continue
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise RewardFunctionError(
                f"reward function {name!r} returned {v!r} at index {i}; expected a float or None"
            ) from None
        if not math.isfinite(x):
            raise RewardFunctionError(f"reward function {name!r} returned a non-finite value {x} at index {i}")
        values.append(x)
        applicable.append(True)
    return FunctionValues(values, applicable)
