"""What several bench scripts share: loading a sibling script as a module (bench/ is not a package).

A script run as ``python bench/<name>.py`` has bench/ on ``sys.path``, so ``from benchlib import bench_module``
works there; tests/conftest.py puts bench/ on the path for the tests that load the scripts.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def bench_module(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` under a private module name, once."""
    key = f"openrft_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
