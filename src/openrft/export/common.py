"""What both exports share: settings, the output folder, samples and prompts, atomic writes, the reward module and the
grading package it imports, the manifest."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pprint
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrft.data.sample import Sample
from openrft.export.runtime import FORMAT_VERSION, PRM_URL_ENV
from openrft.rewards.combine import AGGREGATORS

__all__ = ["MANIFEST", "ExportConfig", "ExportError", "ExportResult", "check_out_dir", "load_splits",
           "prompt_messages", "reward_module_source", "write_bytes", "write_manifest", "write_reward", "write_text"]

MANIFEST = "openrft_export.json"


class ExportError(ValueError):
    """An export cannot be written as asked; the message says what to change."""


@dataclass
class ExportConfig:
    """What to export and how the exported reward scores."""

    data: list[str] = field(default_factory=list, metadata={
        "help": "bundled dataset name (see 'openrft data list'), file or folder"})
    split: str = field(default="train", metadata={"help": "split exported as the training prompts"})
    test_split: str | None = field(default="test", metadata={"help": "split exported as validation prompts; 'none': none"})
    limit: int | None = field(default=None, metadata={"help": "keep the first N samples of each task per split"})
    icl_k: int = field(default=0, metadata={"help": "few-shot examples (retrieved from the train split) in each prompt"})
    model: str | None = field(default=None, metadata={
        "help": "model the engine trains: a hub id or a path on the cluster (default: the recipe's, else openrft rl's; "
                "a bundled name becomes its hub id)"})
    prm_url: str | None = field(default=None, metadata={
        "help": "remote process scorer URL ('openrft prm serve'); none: outcome only"})
    alpha: float = field(default=0.7, metadata={"help": "weight of the outcome when a PRM is set"})
    agg: str = field(default="mean", metadata={"help": f"f over step scores: {'|'.join(AGGREGATORS)}"})
    step_rule: str = field(default="newline", metadata={"help": "step splitting: newline|blank_line|step_k|re:<regex>"})
    partial_credit: float = field(default=0.0, metadata={"help": "reward of a wrong but extracted answer (ReFT: 0.1)"})
    score_answer_step: bool = field(default=True, metadata={
        "help": "the PRM also scores the final-answer step (OpenRFT: false, the outcome term judges the answer)"})
    scores_only: bool = field(default=False, metadata={
        "help": "reward returns a bare float (verl) / tensor (OpenRLHF) instead of a dict with parts (older engines)"})
    overwrite: bool = field(default=False, metadata={
        "help": "write into a non-empty output folder (the export's own files are replaced, others kept)"})

    def __post_init__(self) -> None:
        from openrft.rewards.base import RewardSettings

        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.data:
            raise ExportError("no data given; name a bundled dataset (see 'openrft data list'), a file or a folder")
        if self.test_split is not None and self.test_split.strip().lower() in ("", "none"):
            self.test_split = None
        if self.test_split == self.split:
            raise ExportError(f"split and test_split are both {self.split!r}; "
                              "the validation prompts would be the training prompts")
        if self.icl_k < 0 or (self.limit is not None and self.limit < 1):
            raise ExportError("icl_k must be >= 0 and limit >= 1")
        if self.prm_url is not None:
            self.prm_url = self.prm_url.strip() or None
        if self.prm_url is not None and not self.prm_url.startswith(("http://", "https://")):
            raise ExportError(f"prm_url {self.prm_url!r}: an exported reward reaches its PRM over HTTP; give "
                              "http(s)://host:port/path (serve a PRM with 'openrft prm serve')")
        try:  # the same checks the reward runs on the cluster, now rather than there
            RewardSettings(alpha=self.alpha, agg=self.agg, step_rule=self.step_rule, partial_credit=self.partial_credit)
        except ValueError as err:
            raise ExportError(str(err)) from None

    def reward_config(self) -> dict[str, Any]:
        """The ``CONFIG`` written into the reward module."""
        from openrft import __version__

        return {"format_version": FORMAT_VERSION, "openrft_version": __version__, "prm_url": self.prm_url,
                "alpha": self.alpha, "agg": self.agg, "step_rule": self.step_rule,
                "partial_credit": self.partial_credit, "score_answer_step": self.score_answer_step,
                "scores_only": self.scores_only}


@dataclass
class ExportResult:
    """Where an export went: the folder, each file written, sample counts per split and the usage text."""

    out_dir: Path
    files: dict[str, Path]
    counts: dict[str, int]
    usage: str

    def __str__(self) -> str:
        return self.usage


def check_out_dir(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """``out`` as a path, if it is new or an empty folder (a non-empty one only with ``overwrite``); not created here,
    so an export that fails on its input leaves nothing behind."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} exists and is a file; give a folder for the export")
    if path.is_dir() and not overwrite:
        entries = sorted(p.name for p in path.iterdir())
        if entries:
            shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
            raise ExportError(f"{path} already holds {len(entries)} entries ({shown}); choose a new folder or pass "
                              "--overwrite (replaces the export's own files there and leaves the rest)")
    return path


def load_splits(config: ExportConfig) -> dict[str, list[Sample]]:
    """``{"train": [...], "test": [...]}`` (no ``test`` without a test split); ``DataError`` names a bad source."""
    from openrft.data.loaders import load_sources

    out = {"train": load_sources(config.data, split=config.split, limit_per_task=config.limit)}
    if config.test_split is not None:
        out["test"] = load_sources(config.data, split=config.test_split, limit_per_task=config.limit)
    for name, samples in out.items():
        if not samples:
            raise ExportError(f"split {name!r} of {', '.join(config.data)} holds no samples")
    return out


def prompt_messages(splits: dict[str, list[Sample]], icl_k: int = 0) -> dict[str, list[list[dict[str, str]]]]:
    """Chat messages per sample through :meth:`Task.messages`, the prompt every openrft stage uses;
    with ``icl_k`` the few-shot examples are retrieved from the train split (never the sample itself)."""
    from openrft.tasks import task_for

    examples_for: Callable[[Sample], Sequence[Sample]] = lambda s: ()  # noqa: E731
    if icl_k:
        from openrft.retrieval import make_examples_for

        examples_for = make_examples_for(splits["train"], k=icl_k, allow_fewer=True)
        for samples in splits.values():
            examples_for.prefetch(samples)
    tasks: dict[str, Any] = {}
    out = {}
    for name, samples in splits.items():
        rows = []
        for s in samples:
            task = tasks.get(s.answer_type) or tasks.setdefault(s.answer_type, task_for(s))
            rows.append([{"role": m["role"], "content": m["content"]} for m in task.messages(s, examples_for(s))])
        out[name] = rows
    return out


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes(path: Path, data: bytes) -> Path:
    """Write atomically: temp file in the same folder, then rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def reward_module_source(engine: str, config: dict[str, Any], doc: str, entry_points: str, package: str) -> str:
    """A reward module: docstring, the frozen ``CONFIG``, ``reward()`` (the grading package ``package`` next to the
    module, imported on first use) and the engine's entry points."""
    from openrft import __version__

    return (
        f'"""openrft reward for {engine}, written by `openrft export {engine}` on {time.strftime("%Y-%m-%d %H:%M")}.\n\n'
        f"{doc.strip()}\n\n"
        f"Self-contained: the grading code is the package {package}/ next to this file, copied from openrft\n"
        f"{__version__}; this file and that package import only the standard library, so nothing is installed where\n"
        "the engine scores. CONFIG holds the settings chosen at export time; the environment variable\n"
        f"{PRM_URL_ENV} replaces prm_url.\n"
        '"""\n\n'
        "import os\nimport sys\n\n"
        "HERE = os.path.dirname(os.path.abspath(__file__))\n\n"
        f"CONFIG = {pprint.pformat(config, sort_dicts=False)}\n\n\n"
        "def reward():\n"
        '    """The reward for CONFIG. The package is imported here, on first use, so a function the engine pickles to\n'
        '    another process finds it there too (the export folder at the same path on every node)."""\n'
        "    if HERE not in sys.path:\n"
        "        sys.path.insert(0, HERE)\n"
        f"    from {package}.export.runtime import shared_reward\n\n"
        "    return shared_reward(CONFIG)\n\n\n"
        f"{entry_points.strip()}\n\n\n"
        "reward()  # the settings are checked now, not at the first score\n"
    )


def write_reward(out: Path, engine: str, config: ExportConfig, doc: str, entry_points: str,
                 name: str) -> dict[str, Path]:
    """Write the grading package (:mod:`openrft.export.bundle`) and the reward module ``name`` into ``out``;
    returns every file written, the module under ``"reward"``."""
    from openrft.export.bundle import bundle_sources

    package, sources = bundle_sources()
    files: dict[str, Path] = {}
    for rel, text in sources.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        files[rel] = write_text(out / rel, text)
    files["reward"] = write_text(out / name, reward_module_source(engine, config.reward_config(), doc,
                                                                  entry_points, package))
    return files


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _earlier_files(out: Path) -> list[str]:
    """The files an earlier export's manifest in ``out`` lists (relative paths); none without one."""
    try:
        listed = json.loads((out / MANIFEST).read_text(encoding="utf-8"))["files"].values()
        return [str(entry["path"]) for entry in listed]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []


def _remove_stale(out: Path, stale: set[str]) -> None:
    """Remove ``stale`` files (relative to ``out``) and the folders they leave empty; nothing outside ``out``."""
    root = out.resolve()
    for rel in sorted(stale):
        path = (out / rel).resolve()
        if root not in path.parents or not path.is_file():
            continue
        path.unlink()
        for folder in path.parents:
            if folder == root or any(p.name != "__pycache__" for p in folder.iterdir()):
                break
            for cache in folder.glob("__pycache__"):
                for f in cache.iterdir():
                    f.unlink()
                cache.rmdir()
            folder.rmdir()


def write_manifest(out: Path, engine: str, config: ExportConfig, files: dict[str, Path], counts: dict[str, int],
                   extra: dict[str, Any] | None = None) -> Path:
    """``openrft_export.json`` (written last: its presence marks a complete export); first removes the files of an
    earlier export in the same folder (those its manifest lists) that this one did not write."""
    from openrft import __version__

    _remove_stale(out, set(_earlier_files(out)) - {p.relative_to(out).as_posix() for p in files.values()})
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "overwrite"}
    manifest = {
        "engine": engine, "format_version": FORMAT_VERSION, "openrft_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "settings": settings, **(extra or {}), "counts": counts,
        "files": {key: {"path": p.relative_to(out).as_posix(), "sha256": _sha256(p)} for key, p in files.items()},
    }
    return write_text(out / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
