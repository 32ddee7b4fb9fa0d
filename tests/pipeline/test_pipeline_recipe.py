"""Recipes: every shipped recipe validates; bad keys are named with close matches; --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from openrft.pipeline.recipe import RecipeError, load_recipe, recipe_from_mapping
from openrft.pipeline.runner import expand_tasks, plan_cells

RECIPES = sorted(p for p in (Path(__file__).resolve().parents[2] / "recipes").rglob("*.yaml")
                 if not p.name.startswith("_"))
BASE = {"name": "x", "method": "SFT+RL", "data": "arithmetic",
        "stages": {"synthesize": {"budget": 2}, "sft": {"epochs": 1}, "rl": {"steps": 1}, "eval": {"n": 1}}}


def write(tmp_path, mapping) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(mapping))
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.ordered_stages[-1] == "eval" and recipe.method
    if path.parent.name == "small":
        assert recipe.requires == "cpu" and recipe.model == "smollm2-135m"
    else:
        assert recipe.requires == "gpu"


def test_small_and_paper_recipes_cover_the_method_rows():
    names = {p.parent.name: set() for p in RECIPES}
    for p in RECIPES:
        names[p.parent.name].add(load_recipe(p).method)
    openrft_rows = {"Vanilla", "ReFT", "ReFT+PRM", "SFT", "SFT+", "SFT+RL(PRM)", "SFT+RL(PRM)+DA", "SFT+RL(PRM)+DA+ICL"}
    assert openrft_rows <= names["small"] and openrft_rows <= names["paper"]
    # the efficacy study's extra rows: the few-shot baseline and dense process rewards
    assert {"Vanilla+ICL", "SFT+RL", "SFT+RL(PRM, dense)"} <= names["small"]


def test_small_prm_rows_train_their_prm_and_icl_can_skip_stages():
    for name in ("reft_prm", "sft_rl_prm", "sft_rl_prm_dense", "sft_rl_prm_da", "sft_rl_prm_da_icl"):
        recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "small" / f"{name}.yaml")
        assert "prm" in recipe.ordered_stages and recipe.stage_config("rl").reward.prm == "stage"
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "small" / "sft_rl_prm.yaml",
                         ["prm=null", "rl.reward.prm=judge:smollm2-135m"])  # the judge instead, as documented
    assert "prm" not in recipe.ordered_stages
    recipe = recipe_from_mapping({**BASE, "icl": {"k": 2, "stages": "eval"}}, "r.yaml")
    assert recipe.icl.stages == ["eval"]


@pytest.mark.parametrize("mapping, message", [
    ({**BASE, "stpes": 1}, "r.yaml; did you mean stages"),
    ({**BASE, "stages": {**BASE["stages"], "rl": {"stpes": 2}}}, "unknown key 'stpes' in stages.rl; did you mean steps"),
    ({**BASE, "stages": {**BASE["stages"], "sfft": {}}}, "unknown key 'sfft' in stages; did you mean sft"),
    ({**BASE, "stages": {**BASE["stages"], "rl": {"reward": {"alpah": 0.5}}}},
     "unknown key 'alpah' in stages.rl.reward; did you mean alpha"),
    ({**BASE, "stages": {**BASE["stages"], "rl": {"data": ["gsm8k"]}}}, "stages.rl.data is set by the pipeline"),
    ({**BASE, "stages": {"sft": {}, "eval": {}}}, "add stages.synthesize to the recipe"),
    ({**BASE, "stages": {"sft": {}}}, "has no eval stage"),
    ({**BASE, "stages": {**BASE["stages"], "rl": {"estimator": "ppo2"}}}, "stages.rl: unknown advantage estimator 'ppo2'"),
    ({**BASE, "icl": {"k": 0}}, "icl.k must be a positive integer"),
    ({**BASE, "resplit": 1.5}, "resplit is the held-out part"),
    ({k: v for k, v in BASE.items() if k != "method"}, "missing required key 'method'"),
    ({**BASE, "stages": {**BASE["stages"], "augment": {"feed": "sft"}}}, "stages.augment.feed must be 'rl' or 'all'"),
    ({**BASE, "icl": {"k": 2, "stages": ["rl", "evl"]}}, "icl.stages: unknown stage 'evl'"),
    ({**BASE, "stages": {**BASE["stages"], "rl": {"reward": {"prm": "stage"}}}}, "the recipe has no prm stage"),
    ({**BASE, "stages": {**BASE["stages"], "prm": {"n_rollouts": 0}}}, "n_rollouts must be >= 1"),
])
def test_bad_recipes_name_the_key(tmp_path, mapping, message):
    with pytest.raises(RecipeError, match=None) as err:
        load_recipe(write(tmp_path, mapping))
    assert message in str(err.value)


def test_set_overrides_and_their_errors(tmp_path):
    path = write(tmp_path, BASE)
    recipe = load_recipe(path, ["rl.steps=3", "stages.eval.n=2", "train_size=7", "icl.k=2", "rl.reward.alpha=0.5"])
    assert recipe.stage_config("rl").steps == 3 and recipe.stage_config("rl").reward.alpha == 0.5
    assert recipe.stage_config("eval").n == 2 and recipe.train_size == 7 and recipe.icl.k == 2
    assert load_recipe(path, ["icl=null"]).icl is None
    with pytest.raises(RecipeError, match="unknown recipe key 'trian_size'; did you mean train_size"):
        load_recipe(path, ["trian_size=3"])
    with pytest.raises(RecipeError, match="this recipe has no augment stage"):
        load_recipe(path, ["augment.k=2"])
    assert load_recipe(path, ["augment.k=2"], missing_stages="skip").ordered_stages == ["synthesize", "sft", "rl", "eval"]
    assert load_recipe(path, ["augment={k: 0}"]).stage_config("augment").k == 0
    with pytest.raises(RecipeError, match="takes key=value"):
        load_recipe(path, ["rl.steps"])
    with pytest.raises(RecipeError, match="stages.rl: steps must be >= 1"):
        load_recipe(path, ["rl.steps=0"])
    with pytest.raises(RecipeError, match="recipe .*nope.yaml does not exist"):
        load_recipe(tmp_path / "nope.yaml")


def test_stage_configs_inherit_model_and_seed():
    recipe = recipe_from_mapping({**BASE, "model": "m", "seed": 7})
    assert recipe.stage_config("sft").model == "m" and recipe.stage_config("rl").seed == 7
    assert recipe.stage_config("synthesize").model == "m" and recipe.stage_config("eval").seed == 7
    assert recipe.stage_config("rl", adapter="a/b").adapter == "a/b"


def test_cells_fan_out_over_tasks_and_sizes():
    recipe = recipe_from_mapping(BASE)
    assert [c.id for c in plan_cells(recipe)] == ["arithmetic"]
    tasks = expand_tasks("all", recipe)
    assert len(tasks) == 8 and all(t.startswith("sciknoweval/") for t in tasks)
    cells = plan_cells(recipe, expand_tasks("retrosynthesis,svamp", recipe), [25, 50])
    assert [(c.id, c.task, c.data_size) for c in cells] == [
        ("retrosynthesis-n25", "sciknoweval/retrosynthesis", 25), ("retrosynthesis-n50", "sciknoweval/retrosynthesis", 50),
        ("svamp-n25", "svamp", 25), ("svamp-n50", "svamp", 50)]


@pytest.mark.parametrize("override, message", [
    ("eval.n=three", "stages.eval.n: expected an integer, got 'three'"),
    ("eval.temperature=hot", "stages.eval.temperature: expected a number, got 'hot'"),
    ("eval.max_new_tokens=-3", "stages.eval: max_new_tokens must be >= 1, got -3"),
    ("eval.top_p=0", "stages.eval: top_p must be in (0, 1], got 0"),
    ("eval.chunk_size=0", "stages.eval: chunk_size and rerank_batch_size must be >= 1"),
    ("eval.batch_size=0", "stages.eval.batch_size must be >= 1, got 0"),
    ("eval.backend=vlm", "stages.eval.backend: expected one of 'transformers', 'vllm', got 'vlm'"),
    ("rl.reward.alpha=high", "stages.rl.reward.alpha: expected a number, got 'high'"),
    ("rl.temperature=-1", "stages.rl: temperature must be >= 0, got -1"),
    ("sft.full=maybe", "stages.sft.full: expected true or false, got 'maybe'"),
    ("synthesize.rounds=[2, x]", "stages.synthesize.rounds: expected a list of integers, got [2, 'x']"),
    ("synthesize.max_new_tokens=0", "stages.synthesize: max_new_tokens must be >= 1, got 0"),
    ("seed=abc", "seed: expected an integer, got 'abc'"),
    ("model=135", "model: expected a string, got 135"),
    ("icl.k=two", "icl.k: expected an integer, got 'two'"),
    ("long_questions=drop", "long_questions must be one of skip, error, got 'drop'"),
])
def test_bad_values_are_named_with_their_key_and_type_at_load(tmp_path, override, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, BASE), [override])
    assert message in str(err.value) and str(tmp_path / "r.yaml") in str(err.value)


def test_every_stage_config_checks_its_sampling_and_batch_ranges(tmp_path):
    """Whatever the stage: a bad budget, temperature, top_p or batch size fails when the recipe loads."""
    from openrft.pipeline.recipe import STAGE_ORDER, stage_fields

    bad = {"max_new_tokens": -3, "temperature": -1.0, "top_p": 0.0, "batch_size": 0, "chunk_size": 0}
    stages = {s: {} for s in STAGE_ORDER}
    checked = []
    for stage in STAGE_ORDER:
        for key in stage_fields(stage):
            value = next((v for suffix, v in bad.items() if key == suffix or key.endswith("_" + suffix)), None)
            if value is None:
                continue
            with pytest.raises(RecipeError, match=key):
                recipe_from_mapping({**BASE, "stages": {**stages, stage: {key: value}}})
            checked.append(f"{stage}.{key}")
    assert {"eval.max_new_tokens", "augment.temperature", "rl.top_p", "synthesize.batch_size",
            "prm.generation_batch_size", "eval.rerank_batch_size"} <= set(checked)
