"""Dataclass configs as command-line flags: every field a ``--flag``, ``--config FILE.yaml`` for the same keys.

Precedence: the dataclass defaults, then the YAML file, then explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path
from typing import Any

from openrft.core.configs import build_config


def field_type(cls: type, f: dataclasses.Field) -> Any:
    """The flag type of a field: ``X`` for ``X | None``; ``list[X]`` and ``tuple[X, ...]`` stay as they are."""
    hint = typing.get_type_hints(cls)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args and typing.get_origin(hint) not in (list, tuple) else hint


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 4,8,16,32, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one integer")
    return values


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]


def add_config_args(group, cls: type, aliases: dict[str, list[str]] | None = None, prefix: str = "",
                    skip: tuple[str, ...] = ()) -> list[str]:
    """Add one flag per field of ``cls`` (``--<prefix><name-with-dashes>``); returns the ``dest`` names.

    The one way openrft turns a config dataclass into flags: bools are ``--x/--no-x``; lists take several values
    and repeat (``--data a b --data c`` is ``[a, b, c]``); ``tuple[int, ...]`` is comma-separated (``4,8,16``);
    every flag defaults to unset, so what is not given comes from the dataclass (:func:`explicit_values`).
    """
    aliases = aliases or {}
    dests = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        kind = field_type(cls, f)
        if dataclasses.is_dataclass(kind):
            continue
        dest = f"{prefix.replace('-', '_')}{f.name}"
        flags = [f"--{prefix}{f.name.replace('_', '-')}", *aliases.get(f.name, [])]
        help_ = f.metadata.get("help", "")
        if "default" not in help_:
            default = field_default(f)
            help_ += f" (default: {','.join(map(str, default)) if isinstance(default, tuple) else default})"
        if kind is bool:
            group.add_argument(*flags, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif typing.get_origin(kind) is list:
            group.add_argument(*flags, dest=dest, action="extend", nargs="+", default=None,
                               help=help_ + "; several values, repeatable")
        elif typing.get_origin(kind) is tuple:
            group.add_argument(*flags, dest=dest, type=_int_tuple, default=None, help=help_ + " (e.g. 4,8,16)")
        else:
            group.add_argument(*flags, dest=dest, type=kind, default=None, help=help_)
        dests.append(f.name)
    return dests


def explicit_values(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` given on the command line."""
    out = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f"{prefix.replace('-', '_')}{f.name}", None)
        if value is not None:
            out[f.name] = value
    return out


def config_from_args(cls: type, args: argparse.Namespace, what: str = "", **fixed: Any) -> Any:
    """``cls`` from its defaults, then the ``--config`` YAML (when the parser has one), then explicit flags,
    then ``fixed`` (values the command itself decides); a value of the wrong type or range raises
    :class:`~openrft.core.configs.ConfigValueError` (a ``ValueError`` naming the flag) before anything loads."""
    values: dict[str, Any] = load_yaml_mapping(args.config, what or cls.__name__) \
        if getattr(args, "config", None) else {}
    values.update(explicit_values(args, cls))
    values.update(fixed)
    return build_config(cls, values, "--")


def load_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping of settings, keys normalised to underscores."""
    import yaml

    loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of {what} settings, got {type(loaded).__name__}")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def add_icl_args(ap: argparse.ArgumentParser) -> None:
    """``--icl-k`` and friends: few-shot retrieval (OpenRFT 2.3.1), the same in every stage's CLI."""
    group = ap.add_argument_group("few-shot ICL (the same prompts as 'openrft run' with icl set)")
    group.add_argument("--icl-k", type=int, default=0,
                       help="put the k most similar training Q/A pairs before each question (OpenRFT: 3; 0 = off)")
    group.add_argument("--icl-train", nargs="+", default=None,
                       help="datasets whose training questions are retrieved (default: --data, split 'train')")
    group.add_argument("--icl-split", default="train", help="split of --icl-train to retrieve from")
    group.add_argument("--icl-embedder", default=None,
                       help="sentence-transformers model name or path (default: the bundled all-MiniLM-L6-v2)")
    group.add_argument("--icl-index", default=None,
                       help="directory to save the index in and reuse it from (e.g. a run's <cell>/icl)")
    group.add_argument("--icl-traces", default=None,
                       help="a synthesize traces.jsonl (or its directory): shots of training questions without a "
                            "worked solution of their own show their correct trace, as 'openrft run' does after "
                            "its synthesize stage")


def examples_for_from_args(args: argparse.Namespace, data: list[str] | None):
    """The ``examples_for`` hook the ICL flags ask for, or None when ``--icl-k`` is 0."""
    if not args.icl_k:
        return None
    if args.icl_k < 0:
        raise ValueError(f"--icl-k must be >= 0, got {args.icl_k}")
    from openrft.data.loaders import load_sources
    from openrft.retrieval.embedder import DEFAULT_EMBEDDER
    from openrft.retrieval.fewshot import make_examples_for

    sources = args.icl_train or data
    if not sources:
        raise ValueError("--icl-k needs --icl-train (the datasets to retrieve examples from)")
    if not args.icl_train and any(Path(d).is_file() for d in sources):
        raise ValueError("--icl-k with a data file: name the training data to retrieve examples from with "
                         "--icl-train (a split folder or bundled name is read at --icl-split itself)")
    train = load_sources(sources, split=args.icl_split)
    examples_for = make_examples_for(train, args.icl_k, args.icl_embedder or DEFAULT_EMBEDDER,
                                     index_dir=args.icl_index)
    if getattr(args, "icl_traces", None):
        from openrft.synthesize.stage import verified_traces

        examples_for = examples_for.with_traces(verified_traces(args.icl_traces))
    return examples_for


def request_failure(command: str, err, then: str = "") -> str:
    """The one line a command ends with when an HTTP peer failed for good (a
    :class:`~openrft.models.http.RequestFailed`): ``openrft <command>: <the error>; <then>``, its whitespace
    collapsed and the server's message shortened, so the URL, the last error and the flags to change stay visible."""
    text = " ".join(str(err).split())
    last = " ".join(str(getattr(err, "last_error", "")).split())
    if len(last) > 300:
        text = text.replace(last, last[:300] + " [...]")
    return f"openrft {command}: {text.rstrip('.')}" + (f"; {then}" if then else "")
