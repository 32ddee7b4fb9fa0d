"""The grading code an export carries: openrft's own source files, copied into the export folder as a package.

An exported reward module imports :mod:`openrft.export.runtime`, and that module, through its imports,
the task graders (extraction, numeric/MCQ/text comparison, the program sandbox), the reward combination
and the remote PRM client. :func:`bundle_sources` gives exactly those files (the import closure of
:data:`ROOTS`, found in their syntax trees, plus the files the sandbox runs by path) to write into
``<out>/<package>/``, with ``openrft`` renamed to the package's name in their imports. They import only
the standard library, so the export runs in an engine's Python where openrft cannot be installed, and
grades with the same code as the openrft that wrote it: there is no second copy to keep in step.

The package name ends with a hash of the copied sources (``openrft_grading_<hash>``): two exports of the
same code share one module in a process, and exports of different code never mix.
"""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

__all__ = ["NOT_BUNDLED", "ROOTS", "bundle_files", "bundle_sources", "package_name"]

SRC = Path(__file__).resolve().parents[1]  # src/openrft
ROOTS = ("export/runtime.py",)
#: files a bundled module runs by path rather than importing
RUN_BY_PATH = {"tasks/sandbox.py": ("tasks/sandbox_child.py", "tasks/sandbox_seccomp.py")}
#: imported by a bundled module, but only on a path an exported reward never takes
NOT_BUNDLED = {
    "rewards/prm/loader.py": "build_reward's loader of local and judge PRMs (torch, httpx); an exported reward "
                             "scores a remote PRM through openrft.export.prm_client",
}
_RENAME = re.compile(r"(?<![\w.])openrft(?=\.[A-Za-z_]|\s+import\b)")


def _module_file(module: str) -> str | None:
    """``openrft.a.b`` -> ``a/b.py`` or ``a/b/__init__.py`` (relative to src/openrft), if it exists."""
    parts = module.split(".")[1:]
    for candidate in (Path(*parts, "__init__.py") if parts else Path("__init__.py"),
                      Path(*parts).with_suffix(".py") if parts else None):
        if candidate is not None and (SRC / candidate).is_file():
            return candidate.as_posix()
    return None


def _imported_files(rel: str) -> set[str]:
    """The openrft files ``rel`` imports anywhere (inside functions too: a lazy import runs when its path does)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse((SRC / rel).read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] == "openrft" and (found := _module_file(name)) is not None:
                out.add(found)
    return out


def bundle_files() -> list[str]:
    """The files an export carries, relative to the openrft package, sorted."""
    seen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        rel = todo.pop()
        if rel in seen or rel in NOT_BUNDLED:
            continue
        seen.add(rel)
        todo += [*_imported_files(rel), *RUN_BY_PATH.get(rel, ())]
    return sorted(seen)


def package_name(files: list[str]) -> str:
    """``openrft_grading_<first 10 hex digits of the sha256 of the files' paths and bytes>``."""
    h = hashlib.sha256()
    for rel in files:
        h.update(rel.encode() + b"\0" + (SRC / rel).read_bytes() + b"\0")
    return f"openrft_grading_{h.hexdigest()[:10]}"


def _renamed(source: str, package: str, rel: str) -> str:
    out = _RENAME.sub(package, source)
    for node in ast.walk(ast.parse(out)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        if any(n.split(".")[0] == "openrft" for n in names):
            raise RuntimeError(f"{rel}: an import of openrft was left unrenamed in the bundle")
    return out


def bundle_sources() -> tuple[str, dict[str, str]]:
    """The package's name and ``{"<package>/<file>": source}`` of every file to write.

    A package folder that is not the bundled one's (openrft's own ``__init__.py`` files import far more than the
    graders need) gets an ``__init__.py`` holding only a docstring.
    """
    files = bundle_files()
    package = package_name(files)
    out: dict[str, str] = {}
    folders = {Path(rel).parent for rel in files}
    folders |= {parent for folder in list(folders) for parent in folder.parents}
    for folder in sorted(folders):
        init = (folder / "__init__.py").as_posix()
        if init not in files:
            dotted = ".".join(("openrft", *folder.parts))
            out[f"{package}/{init}"] = f'"""{dotted}: only the modules an exported reward grades with."""\n'
    for rel in files:
        out[f"{package}/{rel}"] = _renamed((SRC / rel).read_text(encoding="utf-8"), package, rel)
    return package, out
