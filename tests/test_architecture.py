"""The layering of docs/architecture.md, checked on the source: imports point down, and nothing imports in a cycle.

Every ``import``/``from ... import`` of an ``openrft`` module is read from the syntax tree of every module under
``src/openrft``, those inside functions too (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "openrft"

#: docs/architecture.md: a package may import only from lower layers
LAYERS = {
    "core": 0,
    "data": 1,
    "tasks": 2, "models": 2,
    "retrieval": 3, "rewards": 3,
    "augment": 4, "synthesize": 4, "sft": 4, "rl": 4, "evaluate": 4, "reward_models": 4, "integrations": 4,
    "report": 5, "export": 5,
    "pipeline": 6,
    "cli": 7, "serve": 7,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The openrft modules ``name`` imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else [])) \
                if node.level else (node.module or "")
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer():
    packages = {_package(m) for m in _modules()} - {None}
    assert packages <= set(LAYERS), f"add {sorted(packages - set(LAYERS))} to docs/architecture.md and LAYERS"


def test_imports_point_down_the_layers():
    wrong = sorted(f"{a} -> {b}" for a, targets in _graph().items() for b in targets
                   if _package(a) and _package(b) and _package(a) != _package(b)
                   and LAYERS[_package(a)] <= LAYERS[_package(b)])
    assert not wrong, "imports sideways or up the layers of docs/architecture.md:\n" + "\n".join(wrong)


def test_no_file_import_cycle():
    assert _cycles(_graph()) == []


def test_no_package_import_cycle():
    packages: dict[str, set[str]] = {}
    for a, targets in _graph().items():
        for b in targets:
            if _package(a) and _package(b) and _package(a) != _package(b):
                packages.setdefault(_package(a), set()).add(_package(b))
    assert _cycles(packages) == []


@pytest.mark.parametrize("source, expected", [
    ("from openrft.core import rundir\n", {"openrft.core.rundir"}),
    ("def f():\n    from .loaders import load_samples\n", {"openrft.data.loaders"}),
    ("import openrft.tasks\n", {"openrft.tasks"}),
])
def test_the_import_reader_sees_lazy_relative_and_submodule_imports(tmp_path, source, expected):
    path = tmp_path / "bundled.py"
    path.write_text(source)
    assert _imports("openrft.data.bundled", path, _modules()) == expected


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_files_and_functions_stay_small_enough_to_hold_in_mind():
    """docs/architecture.md: no source file over 500 lines, no function over 80 (docstring included)."""
    long_files, long_functions = [], []
    for name, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 500:
            long_files.append(f"{path.relative_to(SRC.parent)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long_functions.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long_files and not long_functions, "\n".join(long_files + long_functions)
