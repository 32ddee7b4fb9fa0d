"""Recipes: one YAML file per method row, validated before anything runs.

A recipe names the method, the model, the data, optional ICL retrieval, and the settings of each
stage it runs; stages run in the fixed order :data:`STAGE_ORDER`, and a stage left out of
``stages`` is not run (Vanilla = ``eval`` only; ReFT = ``rl`` + ``eval``; SFT+RL(PRM)+DA+ICL =
all of them with ``icl`` set)::

    name: sft_rl_prm_small
    method: SFT+RL(PRM)
    model: smollm2-135m
    data: arithmetic            # one task per entry (bundled name or file); 'openrft run --tasks' overrides
    train_size: 40              # first N training samples per task; 'openrft run --data-sizes' fans out
    test_size: 100
    icl: {k: 3}                 # omit for no few-shot retrieval
    stages:
      synthesize: {budget: 4, max_new_tokens: 128}
      sft: {epochs: 2, learning_rate: 2.0e-4}
      rl: {estimator: gae, steps: 8, reward: {prm: "judge:smollm2-135m", alpha: 0.7}}
      eval: {n: 3, max_new_tokens: 128}

``long_questions: skip`` (the default) leaves out, with a warning naming each, a question too long for the
model's context (see :mod:`openrft.data.lengths`); ``error`` stops the run instead, before anything runs.

``extends: other.yaml`` starts from another recipe (path relative to this one) and merges this
one over it; ``null`` removes an inherited key (``icl: null``, ``stages: {augment: null}``).

Each stage section takes the fields of that stage's config (``openrft <stage> --help`` lists them,
with ``_`` for ``-``), plus the pipeline keys in :data:`PIPELINE_KEYS`. An unknown key is named
with its close matches. ``--set key=value`` overrides any key: ``rl.steps=2`` (short for
``stages.rl.steps``), ``train_size=10``, ``icl.k=2``; ``null`` removes one (``icl=null``,
``augment=null`` drops the stage).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from openrft.core.configs import ConfigValueError, build_config, check_value, check_values

STAGE_ORDER = ("augment", "synthesize", "sft", "prm", "rl", "eval")
#: keys a stage section takes besides its config's fields (handled by the pipeline, not the stage)
PIPELINE_KEYS: dict[str, dict[str, str]] = {
    "augment": {"feed": "which stages train on the augmented questions: rl (OpenRFT: RL only; synthesis, SFT and "
                        "the PRM use the originals) or all (every training stage)"},
    "synthesize": {},
    "sft": {"traces": "traces.jsonl to train on when the recipe has no synthesize stage"},
    "prm": {},
    "rl": {},
    "eval": {"label": "row name in the tables (default: the recipe's method)",
             "backend": "generation backend: transformers | vllm (default: transformers)",
             "batch_size": "sequences decoded together (transformers backend)"},
}
#: the values of the pipeline keys (augment.feed is checked with the stages it feeds)
PIPELINE_TYPES: dict[str, Any] = {"traces": str, "label": str, "backend": Literal["transformers", "vllm"],
                                  "batch_size": int}
#: config fields the pipeline sets itself; a recipe that sets them is told so
PIPELINE_OWNED = {
    "rl": ("data", "split", "limit", "output_dir"),
    "prm": ("init_adapter",),  # the policy's SFT adapter, when policy_backbone is true
}
TOP_KEYS = ("extends", "name", "method", "description", "paper", "model", "data", "answer_type", "train_split", "test_split",
            "resplit", "train_size", "test_size", "seed", "dtype", "icl", "stages", "requires", "long_questions")


class RecipeError(ValueError):
    """A recipe that cannot run: unknown keys, bad values, stages that cannot feed each other."""


def _close(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def check_keys(mapping: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Raise :class:`RecipeError` naming the first unknown key of ``mapping`` and its close matches.

    >>> check_keys({"stpes": 2}, ["steps", "seed"], "stages.rl")
    Traceback (most recent call last):
    ...
    openrft.pipeline.recipe.RecipeError: unknown key 'stpes' in stages.rl; did you mean steps?
    """
    known = list(known)
    for key in mapping:
        if key not in known:
            raise RecipeError(f"unknown key {key!r} in {where}{_close(str(key), known)}")


@dataclass
class ICLSettings:
    """Few-shot retrieval (OpenRFT 2.3.1): the k most similar training Q/A pairs before each question."""

    k: int = field(default=3, metadata={"help": "examples per prompt (OpenRFT: 3)"})
    embedder: str | None = field(default=None, metadata={
        "help": "sentence-transformers model name or path (default: the bundled all-MiniLM-L6-v2)"})
    allow_fewer: bool = field(default=False, metadata={
        "help": "give fewer than k examples when a task has too few training samples, instead of failing"})
    stages: list[str] | None = field(default=None, metadata={
        "help": "the stages whose prompts carry the examples (default: every stage); e.g. [rl, eval] keeps the "
                "warm-up and the PRM without shots"})

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise RecipeError(f"icl.k must be a positive integer, got {self.k!r}")
        if self.stages is not None:
            if isinstance(self.stages, str):
                self.stages = [self.stages]
            if not isinstance(self.stages, list) or not self.stages:
                raise RecipeError(f"icl.stages must be a list of stage names, got {self.stages!r}")
            for stage in self.stages:
                if stage not in STAGE_ORDER or stage == "augment":
                    raise RecipeError(f"icl.stages: unknown stage {stage!r}{_close(str(stage), STAGE_ORDER)} "
                                      f"(stages that take few-shot prompts: {', '.join(STAGE_ORDER[1:])})")


def _stage_classes() -> dict[str, type]:
    from openrft.augment.stage import AugmentConfig
    from openrft.evaluate.runner import EvalConfig
    from openrft.reward_models.prm_stage import PRMStageConfig
    from openrft.rl.config import RLConfig
    from openrft.sft.stage import SFTStageConfig
    from openrft.synthesize.stage import SynthesizeConfig

    return {"augment": AugmentConfig, "synthesize": SynthesizeConfig, "sft": SFTStageConfig, "prm": PRMStageConfig,
            "rl": RLConfig, "eval": EvalConfig}


def stage_fields(stage: str) -> list[str]:
    """Keys a recipe may set in ``stages.<stage>``."""
    cls = _stage_classes()[stage]
    owned = PIPELINE_OWNED.get(stage, ())
    return [f.name for f in dataclasses.fields(cls) if f.name not in owned] + list(PIPELINE_KEYS[stage]) \
        + list(getattr(cls, "OLD_KEYS", ()))


def _check_pipeline_values(stage: str, settings: Mapping[str, Any]) -> None:
    """The pipeline keys of ``stages.<stage>`` hold values of their type (:data:`PIPELINE_TYPES`) and range."""
    for key in PIPELINE_KEYS[stage]:
        if key in settings and key in PIPELINE_TYPES:
            try:
                check_value(settings[key], PIPELINE_TYPES[key], f"stages.{stage}.{key}")
            except ConfigValueError as err:
                raise RecipeError(str(err)) from None
    if "batch_size" in PIPELINE_KEYS[stage] and settings.get("batch_size", 1) < 1:
        raise RecipeError(f"stages.{stage}.batch_size must be >= 1, got {settings['batch_size']}")


@dataclass
class Recipe:
    """A validated recipe (see the module docstring). ``source`` is the file it came from."""

    name: str
    method: str
    data: list[str]
    stages: dict[str, dict[str, Any]]
    model: str = "smollm2-135m"
    description: str = ""
    paper: str = ""
    answer_type: str | None = None  # e.g. "program" for ReFT's P-CoT on GSM8K/SVAMP
    train_split: str = "train"
    test_split: str = "test"
    resplit: int | float | None = None  # split test_split into train/test (datasets bundled without a train split)
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0
    dtype: str = "auto"
    icl: ICLSettings | None = None
    requires: str = "cpu"
    long_questions: str = "skip"  # a question too long for the model: skip it with a warning, or error before running
    source: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.data or not all(isinstance(d, str) and d for d in self.data):
            raise RecipeError(f"recipe {self.name!r}: 'data' must name at least one dataset, got {self.data!r}")
        for key in ("train_size", "test_size"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise RecipeError(f"recipe {self.name!r}: {key} must be a positive integer or null, got {value!r}")
        if self.resplit is not None and (isinstance(self.resplit, bool) or not (
                (isinstance(self.resplit, int) and self.resplit >= 1) or (isinstance(self.resplit, float) and 0 < self.resplit < 1))):
            raise RecipeError(f"recipe {self.name!r}: resplit is the held-out part of test_split, a count >= 1 or a "
                              f"fraction in (0, 1), got {self.resplit!r}")
        from openrft.data.sample import ANSWER_TYPES

        if self.answer_type is not None and self.answer_type not in ANSWER_TYPES:
            raise RecipeError(f"recipe {self.name!r}: answer_type {self.answer_type!r} is unknown; valid: "
                              f"{', '.join(ANSWER_TYPES)} (program = ReFT's P-CoT)")
        if self.requires not in ("cpu", "gpu"):
            raise RecipeError(f"recipe {self.name!r}: requires must be 'cpu' or 'gpu', got {self.requires!r}")
        from openrft.data.lengths import LONG_QUESTIONS

        if self.long_questions not in LONG_QUESTIONS:
            raise RecipeError(f"recipe {self.name!r}: long_questions must be one of {', '.join(LONG_QUESTIONS)}, got "
                              f"{self.long_questions!r}")
        if not isinstance(self.stages, dict) or not self.stages:
            raise RecipeError(f"recipe {self.name!r}: 'stages' must map stage names to settings "
                              f"(stages: {', '.join(STAGE_ORDER)})")
        check_keys(self.stages, STAGE_ORDER, "stages")
        feed = (self.stages.get("augment") or {}).get("feed", "rl")
        if feed not in ("rl", "all"):
            raise RecipeError(f"stages.augment.feed must be 'rl' or 'all', got {feed!r}")
        if "eval" not in self.stages:
            raise RecipeError(f"recipe {self.name!r} has no eval stage; every method row ends with one")
        for stage, settings in self.stages.items():
            if settings is None:
                self.stages[stage] = settings = {}
            if not isinstance(settings, dict):
                raise RecipeError(f"stages.{stage} must be a mapping of settings, got {type(settings).__name__}")
            owned = [k for k in settings if k in PIPELINE_OWNED.get(stage, ())]
            if owned:
                raise RecipeError(f"stages.{stage}.{owned[0]} is set by the pipeline (from the recipe's data, "
                                  f"train_size and run directory); remove it")
            check_keys(settings, stage_fields(stage), f"stages.{stage}")
            _check_pipeline_values(stage, settings)
        if "sft" in self.stages and "synthesize" not in self.stages and not self.stages["sft"].get("traces"):
            raise RecipeError("stage 'sft' trains on the traces that the 'synthesize' stage produces: add "
                              "stages.synthesize to the recipe, or name a traces.jsonl in stages.sft.traces")
        # build every stage config once, so a bad value fails now and not an hour into the run
        configs = {stage: self.stage_config(stage) for stage in self.ordered_stages}
        self._check_prm_from_stage(configs)

    def _check_prm_from_stage(self, configs: dict[str, Any]) -> None:
        """``rl.reward.prm: stage`` and ``eval.rerank: prm:stage`` name the PRM this recipe's ``prm`` stage trains."""
        from openrft.rewards.prm.loader import PRM_FROM_STAGE

        users = []
        if "rl" in configs and configs["rl"].reward.prm == PRM_FROM_STAGE:
            users.append("stages.rl.reward.prm")
        if "eval" in configs and configs["eval"].rerank == f"prm:{PRM_FROM_STAGE}":
            users.append("stages.eval.rerank")
        if users and "prm" not in configs:
            raise RecipeError(f"{users[0]} is {PRM_FROM_STAGE!r} (the PRM this recipe's prm stage trains), but the "
                              "recipe has no prm stage: add stages.prm, or name a PRM checkpoint or judge:<model>")

    @property
    def ordered_stages(self) -> list[str]:
        return [s for s in STAGE_ORDER if s in self.stages]

    def stage_config(self, stage: str, **pipeline_values: Any):
        """The stage's config object: recipe-wide defaults (model, seed, dtype), then the stage's settings,
        then ``pipeline_values`` (paths the pipeline fills in)."""
        cls = _stage_classes()[stage]
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, default in (("model", self.model), ("seed", self.seed), ("dtype", self.dtype)):
            if key in names:
                values[key] = default
        old_keys = getattr(cls, "OLD_KEYS", {})  # moved by the config's from_dict, with a warning
        values.update({k: copy.deepcopy(v) for k, v in self.stages[stage].items() if k in names or k in old_keys})
        values.update({k: v for k, v in pipeline_values.items() if k in names})
        if stage == "augment" and values.get("k", 5) == 0:
            values.pop("model", None)
        for section in ("reward", "advantage") if stage == "rl" else ():
            if isinstance(values.get(section), dict):
                nested = typing.get_type_hints(cls)[section]
                check_keys(values[section], [f.name for f in dataclasses.fields(nested)], f"stages.rl.{section}")
        try:
            return build_config(cls, values, f"stages.{stage}")
        except RecipeError:
            raise
        except ValueError as err:  # a ConfigValueError: the key, the value and what it should be
            raise RecipeError(str(err)) from None

    def pipeline_value(self, stage: str, key: str, default: Any = None) -> Any:
        return self.stages.get(stage, {}).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        return d


# ----------------------------------------------------------------------------------- loading
def parse_set(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``key=value`` overrides: dotted keys, YAML values (``2``, ``1e-4``, ``null``, ``[a, b]``, ``true``).

    >>> parse_set(["rl.steps=2", "icl=null", "stages.eval.n=1", "rl.reward.prm=judge:smollm2-135m"])
    [(['stages', 'rl', 'steps'], 2), (['icl'], None), (['stages', 'eval', 'n'], 1), (['stages', 'rl', 'reward', 'prm'], 'judge:smollm2-135m')]
    """
    import yaml

    out = []
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise RecipeError(f"--set takes key=value (e.g. rl.steps=2), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise RecipeError(f"--set {item!r}: the value is not valid YAML ({err})") from None
        path = key.split(".")
        if path[0] in STAGE_ORDER:
            path = ["stages", *path]
        out.append((path, value))
    return out


def apply_overrides(raw: dict[str, Any], overrides: Iterable[tuple[list[str], Any]],
                    missing_stages: str = "error") -> dict[str, Any]:
    """A copy of the raw recipe mapping with each override set (intermediate mappings created).

    A setting of a stage the recipe does not run (``rl.steps=2`` on an SFT recipe) is an error, or
    skipped with ``missing_stages="skip"`` (one override list for several recipes); a whole stage
    given as a mapping (``rl={steps: 2}``) adds it.
    """
    raw = copy.deepcopy(raw)
    for path, value in overrides:
        if path[0] not in TOP_KEYS:
            raise RecipeError(f"--set {'.'.join(path)}: unknown recipe key {path[0]!r}{_close(path[0], TOP_KEYS)}"
                              f" (stage settings: <stage>.<key>, stages: {', '.join(STAGE_ORDER)})")
        if path[0] == "stages" and len(path) > 2 and path[1] not in (raw.get("stages") or {}):
            if missing_stages == "skip":
                continue
            raise RecipeError(f"--set {'.'.join(path[1:])}: this recipe has no {path[1]} stage (its stages: "
                              f"{', '.join(s for s in STAGE_ORDER if s in (raw.get('stages') or {}))}); add the "
                              f"whole stage with --set {path[1]}={{...}} or use a recipe that has it")
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {'.'.join(path)}: {'.'.join(path[:i + 1])} is not a mapping")
            node = child
        if value is None:  # null removes the key: icl=null, augment=null (the stage is not run)
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return raw


_EXP_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _numbers(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; read it as the number the user meant.

    >>> _numbers({"lr": "1e-4", "reward": {"alpha": "7E-1"}, "name": "e5", "rounds": ["2e1"]})
    {'lr': 0.0001, 'reward': {'alpha': 0.7}, 'name': 'e5', 'rounds': [20.0]}
    """
    if isinstance(value, str) and _EXP_FLOAT.match(value.strip()):
        return float(value)
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def recipe_from_mapping(raw: Mapping[str, Any], source: str | None = None) -> Recipe:
    where = source or "recipe"
    if not isinstance(raw, Mapping):
        raise RecipeError(f"{where}: expected a mapping of recipe keys, got {type(raw).__name__}")
    raw = _numbers(raw)
    raw = {str(k).replace("-", "_"): v for k, v in raw.items()}
    check_keys(raw, TOP_KEYS, where)
    for key in ("name", "method", "data", "stages"):
        if key not in raw:
            raise RecipeError(f"{where}: missing required key {key!r}")
    values = dict(raw)
    icl = values.get("icl")
    if icl is not None:
        if isinstance(icl, int) and not isinstance(icl, bool):
            icl = {"k": icl}
        if not isinstance(icl, Mapping):
            raise RecipeError(f"{where}: icl must be a mapping like {{k: 3}} or null, got {icl!r}")
        check_keys(icl, [f.name for f in dataclasses.fields(ICLSettings)], "icl")
        _check_types(ICLSettings, icl, "icl", where)
        values["icl"] = ICLSettings(**icl)
    _check_types(Recipe, values, "", where)
    values["stages"] = {str(k): (copy.deepcopy(v) if v is not None else {}) for k, v in (raw["stages"] or {}).items()}
    try:
        return Recipe(**values, source=source)
    except RecipeError as err:
        raise RecipeError(f"{where}: {err}") from None


def _check_types(cls: type, values: Mapping[str, Any], prefix: str, where: str) -> None:
    try:
        check_values(cls, values, prefix)
    except ConfigValueError as err:
        raise RecipeError(f"{where}: {err}") from None


def merge_mappings(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child`` over ``base``, recursively for mappings; a ``null`` in ``child`` removes the inherited key.

    >>> merge_mappings({"a": 1, "s": {"rl": {"steps": 2, "lr": 1}, "sft": {}}}, {"s": {"rl": {"steps": 3}, "sft": None}})
    {'a': 1, 's': {'rl': {'steps': 3, 'lr': 1}}}
    """
    out = copy.deepcopy(dict(base))
    for key, value in child.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_recipe_mapping(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The recipe mapping at ``path``, merged over the recipe it ``extends`` (a path relative to it)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        found = sorted(p.name for p in path.parent.glob("*.yaml") if not p.name.startswith("_")) \
            if path.parent.is_dir() else []
        hint = f"; recipes in {path.parent}: {', '.join(found)}" if found else ""
        raise RecipeError(f"recipe {path} does not exist{hint}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping of recipe keys, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in _seen or parent_path == path.resolve():
        raise RecipeError(f"{path}: 'extends' makes a cycle through {parent_path}")
    return merge_mappings(read_recipe_mapping(parent_path, (*_seen, path.resolve())), raw)


def load_recipe(path: str | os.PathLike, overrides: Iterable[str] = (), missing_stages: str = "error") -> Recipe:
    """Read, override (``--set`` strings) and validate the recipe at ``path``."""
    raw = apply_overrides(read_recipe_mapping(path), parse_set(overrides), missing_stages)
    return recipe_from_mapping(raw, source=str(path))
