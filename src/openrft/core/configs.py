"""Config dataclasses built from plain values (a recipe section, a YAML file, command-line flags).

Every value is checked against its field's annotation before the dataclass is built (``int``, ``float``,
``bool``, ``str``, ``Literal[...]``, ``list[X]``, ``tuple[X, ...]``, ``X | None``, nested config dataclasses), so
``n: three`` or ``temperature: "hot"`` fails at once with the key, the value and the type it should have; the
dataclass's own ``__post_init__`` then checks ranges (``max_new_tokens`` >= 1, ...). Values are never converted:
what a config holds, and so every stage identity hashed from it, is what was given.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigValueError", "build_config", "check_value", "check_values", "describe"]

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


class ConfigValueError(ValueError):
    """A config value of the wrong type or out of range, named by its key."""


def describe(hint: Any) -> str:
    """What a value of type ``hint`` looks like, in words.

    >>> describe(int | None), describe(list[str]), describe(typing.Literal["a", "b"])
    ('an integer or null', 'a list of strings', "one of 'a', 'b'")
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _NAMES:
        return _NAMES[hint]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in sorted(args, key=lambda a: a is type(None)))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return f"a list of {_PLURALS.get(item, f'items each {describe(item)}')}"
    if origin is dict or hint is dict or origin is Mapping:
        return "a mapping"
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} settings"
    return getattr(hint, "__name__", str(hint))


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is a ``hint``: ints count as floats, bools only as bools, one item as a one-item list."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple):
        item = args[0] if args else Any
        if not isinstance(value, (list, tuple)):
            return origin is list and _fits(value, item)  # the configs wrap one item in a list
        return all(_fits(v, item) for v in value)
    if origin is dict or hint is dict or origin is Mapping:
        return isinstance(value, Mapping)
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (hint, Mapping))
    return not isinstance(hint, type) or isinstance(value, hint)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _key(where: str, name: str) -> str:
    """A value's name in messages: ``stages.eval.n`` (a recipe), ``--max-new-tokens`` (flags: ``where`` is ``--``)."""
    if where == "--":
        return f"--{name.rsplit('.', 1)[-1].replace('_', '-')}"
    return f"{where}.{name}" if where else name


def check_values(cls: type, values: Mapping[str, Any], where: str = "") -> None:
    """Raise :class:`ConfigValueError` for the first value that does not fit its field's annotation.

    ``where`` prefixes the key (``stages.eval`` names ``stages.eval.n``; ``--`` names the flag ``--n``). Keys that
    are not fields are left to the dataclass. A mapping given for a nested config dataclass is checked too.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     n: int = 1
    >>> check_values(C, {"n": "three"}, "stages.eval")
    Traceback (most recent call last):
    ...
    openrft.core.configs.ConfigValueError: stages.eval.n: expected an integer, got 'three'
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value, hint = values[f.name], hints[f.name]
        check_value(value, hint, _key(where, f.name))
        nested = next((a for a in (hint, *typing.get_args(hint)) if dataclasses.is_dataclass(a)), None)
        if nested is not None and isinstance(value, Mapping):
            check_values(nested, value, "--" if where == "--" else _key(where, f.name))


def check_value(value: Any, hint: Any, key: str) -> None:
    """Raise :class:`ConfigValueError` naming ``key`` unless ``value`` is a ``hint`` (as a config field's value).

    >>> check_value(-3, int, "eval.n")
    >>> check_value("hot", float, "eval.temperature")
    Traceback (most recent call last):
    ...
    openrft.core.configs.ConfigValueError: eval.temperature: expected a number, got 'hot'
    """
    if not _fits(value, hint):
        raise ConfigValueError(f"{key}: expected {describe(hint)}, got {_show(value)}")


def build_config(cls: type, values: Mapping[str, Any], where: str = "") -> Any:
    """``cls`` from ``values`` (its ``from_dict`` when it has one): types checked first (:func:`check_values`),
    then the dataclass's own checks; every failure is a :class:`ConfigValueError`, prefixed with ``where``."""
    check_values(cls, values, where)
    try:
        return cls.from_dict(dict(values)) if hasattr(cls, "from_dict") else cls(**values)
    except ConfigValueError:
        raise
    except (TypeError, ValueError) as err:
        prefix = f"{where}: " if where and where != "--" else ""
        raise ConfigValueError(f"{prefix}{err}") from None
