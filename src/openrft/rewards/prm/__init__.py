"""Process scorers (PRMs): one contract, several checkpoint formats, loaded by :func:`load_scorer`.

The scorer classes import torch/transformers, so they load lazily on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from openrft.rewards.prm.base import PRMFormatError, ProcessScorer, check_scores

__all__ = [
    "FORMATS",
    "JudgePRM",
    "MathShepherdPRM",
    "PRMFormatError",
    "ProcessScorer",
    "RemoteScorer",
    "RemoteScorerError",
    "TokenClassPRM",
    "check_scores",
    "detect_format",
    "load_scorer",
    "serve_scorer",
    "write_marker",
]

_LAZY = {
    "FORMATS": "loader",
    "detect_format": "loader",
    "load_scorer": "loader",
    "write_marker": "loader",
    "JudgePRM": "judge",
    "MathShepherdPRM": "math_shepherd",
    "TokenClassPRM": "token_class",
    "RemoteScorer": "remote",
    "RemoteScorerError": "remote",
    "serve_scorer": "remote",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'openrft.rewards.prm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"openrft.rewards.prm.{module}"), name)
