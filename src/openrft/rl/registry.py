"""Functions by name (advantage estimators, policy losses): a registry that also takes ``package.module:function``
and refuses a name already taken, so a plug-in cannot silently replace a built-in."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

F = TypeVar("F", bound=Callable)

__all__ = ["Registry"]


class Registry(Generic[F]):
    """``register(name)`` decorates a function into :attr:`items`; ``get(name)`` returns it, or the function a dotted
    path names.

    >>> losses = Registry("policy loss")
    >>> @losses.register("zero")
    ... def zero(*args, **kwargs):
    ...     return 0
    >>> losses.get("zero") is zero, losses.get("math:floor").__name__
    (True, 'floor')
    """

    def __init__(self, kind: str, wrap: Callable[[F], F] | None = None):
        self.kind = kind
        self.wrap = wrap  # applied to each registered function (estimators run under no_grad)
        self.items: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        if name in self.items:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name")

        def deco(fn: F) -> F:
            out = self.wrap(fn) if self.wrap is not None else fn
            self.items[name] = out
            return out

        return deco

    def get(self, name: str) -> F:
        if ":" in name:
            mod, _, attr = name.partition(":")
            try:
                fn = getattr(importlib.import_module(mod), attr)
            except (ImportError, AttributeError) as err:
                raise ValueError(f"{self.kind} {name!r}: {err}") from None
            if not callable(fn):
                raise ValueError(f"{self.kind} {name!r} is not a function")
            return fn
        try:
            return self.items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self.items))} "
                             "or a dotted path 'package.module:function'") from None
