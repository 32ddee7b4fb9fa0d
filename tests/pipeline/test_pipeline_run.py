"""``openrft run`` end to end on a tiny random model: stages in order, skip on rerun, resume after a kill,
downstream reruns when an upstream setting changes, and the errors a user can act on."""

from __future__ import annotations

import json

import pytest
import yaml

from openrft.cli.main import main
from openrft.pipeline import runner
from openrft.pipeline.recipe import load_recipe
from openrft.core.rundir import IncompatibleRunError
from openrft.pipeline.runner import run_recipe


@pytest.fixture()
def recipe_path(tmp_path, tiny_model_dir):
    recipe = {
        "name": "tiny", "method": "SFT+RL+ICL", "model": str(tiny_model_dir), "data": "arithmetic",
        "train_size": 6, "test_size": 3, "icl": {"k": 2},
        "stages": {
            "synthesize": {"budget": 2, "rounds": [2], "max_new_tokens": 8},
            "sft": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "max_length": 256},
            "rl": {"estimator": "grpo", "steps": 1, "prompts_per_step": 2, "n_samples": 2, "max_new_tokens": 8,
                   "lr": 1e-3, "save_every": 1, "tensorboard": False},
            "eval": {"n": 2, "max_new_tokens": 8},
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _stages(run_dir):
    data = json.loads((run_dir / "run.json").read_text())
    return data, {k: v["status"] for k, v in data["cells"][0]["stages"].items()}


def test_run_skips_finished_stages_and_reruns_only_downstream_of_a_change(recipe_path, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    result = run_recipe(load_recipe(recipe_path), run_dir, show_progress=False, log=lambda m: None)
    data, stages = _stages(run_dir)
    assert data["status"] == "finished" and data["method"] == "SFT+RL+ICL"
    assert stages == {"synthesize": "finished", "sft": "finished", "rl": "finished", "eval": "finished"}
    cell = run_dir / "arithmetic"
    for stage in ("synthesize", "sft", "rl", "eval"):
        assert json.loads((cell / stage / "manifest.json").read_text())["status"] == "finished"
    assert (cell / "icl" / "index.faiss").is_file() and (cell / "rl" / "adapter" / "adapter_config.json").is_file()
    assert 0.0 <= result.accuracy["arithmetic"] <= 1.0 and result.report is not None and result.report.is_file()
    # the evaluated model is the RL adapter, and every evaluated prompt carried 2 retrieved examples
    eval_manifest = json.loads((cell / "eval" / "manifest.json").read_text())
    assert "rl/adapter" in eval_manifest["stats"]["weights"] and eval_manifest["config"]["adapter"] == "local"
    assert (run_dir / "recipe.yaml").is_file() and (run_dir / "report.md").is_file()

    again = run_recipe(load_recipe(recipe_path), run_dir, show_progress=False, log=lambda m: None)
    assert set(_stages(run_dir)[1].values()) == {"skipped"}
    assert again.accuracy == result.accuracy

    # another SFT learning rate: synthesis is reused; SFT, RL (new starting adapter) and evaluation run again
    run_recipe(load_recipe(recipe_path, ["sft.learning_rate=2e-3"]), run_dir, show_progress=False, log=lambda m: None)
    assert _stages(run_dir)[1] == {"synthesize": "skipped", "sft": "finished", "rl": "finished", "eval": "finished"}
    new_eval = json.loads((cell / "eval" / "manifest.json").read_text())
    assert new_eval["inputs"]["adapter"] != eval_manifest["inputs"]["adapter"]


def test_interrupted_run_is_recorded_and_the_rerun_continues(recipe_path, tmp_path, monkeypatch):
    run_dir = tmp_path / "runs" / "tiny"
    real_rl = runner.STAGES["rl"]

    def killed(ctx):
        raise KeyboardInterrupt

    monkeypatch.setitem(runner.STAGES, "rl", killed)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(recipe_path), run_dir, show_progress=False, log=lambda m: None)
    data, stages = _stages(run_dir)
    assert data["status"] == "interrupted"
    assert stages == {"synthesize": "finished", "sft": "finished", "rl": "interrupted"}
    monkeypatch.setitem(runner.STAGES, "rl", real_rl)
    run_recipe(load_recipe(recipe_path), run_dir, show_progress=False, log=lambda m: None)
    data, stages = _stages(run_dir)
    assert data["status"] == "finished"
    assert stages == {"synthesize": "skipped", "sft": "skipped", "rl": "finished", "eval": "finished"}


def test_cli_errors_before_any_stage_runs(recipe_path, tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["run", str(recipe_path), "--runs-dir", runs, "--set", "icl.k=6", "--quiet"]) == 2
    assert "icl.k=6 but arithmetic has 6 training samples" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "tiny" / "arithmetic").exists()
    assert main(["run", str(recipe_path), "--runs-dir", runs, "--set", "icl.embedder=/no/such/embedder"]) == 2
    assert "/no/such/embedder" in capsys.readouterr().err
    assert main(["run", str(recipe_path), "--runs-dir", runs, "--set", "rl.stpes=2"]) == 2
    assert "unknown key 'stpes' in stages.rl; did you mean steps" in capsys.readouterr().err
    assert main(["run", str(recipe_path), "--runs-dir", runs, "--data-sizes", "0"]) == 2
    assert "positive sizes" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", str(recipe_path), "--runs-dir", runs, "--dry-run"]) == 0
    assert "rl: RLConfig(" in capsys.readouterr().out


def test_a_run_dir_of_another_version_or_method_is_refused(recipe_path, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"format_version": 99, "openrft_version": "9.0"}))
    with pytest.raises(IncompatibleRunError, match="run format 99 .*new run directory"):
        run_recipe(load_recipe(recipe_path, ["icl=null"]), run_dir, show_progress=False, log=lambda m: None)
    (run_dir / "run.json").write_text(json.dumps({"format_version": 1, "method": "Vanilla", "cells": []}))
    with pytest.raises(IncompatibleRunError, match="holds a run of method 'Vanilla'"):
        run_recipe(load_recipe(recipe_path, ["icl=null"]), run_dir, show_progress=False, log=lambda m: None)


def test_sft_without_traces_names_the_stage_that_makes_them(recipe_path, tmp_path):
    recipe = load_recipe(recipe_path, ["icl=null", f"sft.traces={tmp_path / 'none.jsonl'}", "synthesize=null"])
    assert recipe.ordered_stages == ["sft", "rl", "eval"]
    with pytest.raises(Exception, match="none.jsonl"):
        run_recipe(recipe, tmp_path / "runs" / "x", show_progress=False, log=lambda m: None)


def test_reuse_takes_matching_stages_of_another_run_only(recipe_path, tmp_path):
    sft_run = tmp_path / "runs" / "sft"
    run_recipe(load_recipe(recipe_path, ["rl=null", "method=SFT+ICL"]), sft_run, show_progress=False,
               log=lambda m: None, report=False)
    rl_run = tmp_path / "runs" / "rl"
    lines: list[str] = []
    run_recipe(load_recipe(recipe_path), rl_run, show_progress=False, log=lines.append, report=False,
               reuse_from=[sft_run])
    assert _stages(rl_run)[1] == {"synthesize": "skipped", "sft": "skipped", "rl": "finished", "eval": "finished"}
    assert any("sft: copied the finished stage" in m for m in lines)
    # the SFT run's evaluation follows other upstream stages (no rl): not even copied as a candidate
    assert not any("eval: copied" in m for m in lines)
    assert not list(rl_run.rglob("*.replaced-*"))
    # other synthesis settings: the copied stage does not match and is dropped (not kept aside as if it were this
    # run's own earlier outputs); synthesis and everything after it run again
    other = tmp_path / "runs" / "other"
    run_recipe(load_recipe(recipe_path, ["synthesize.seed=5"]), other, show_progress=False, log=lines.append,
               report=False, reuse_from=[sft_run])
    assert _stages(other)[1] == {"synthesize": "finished", "sft": "finished", "rl": "finished", "eval": "finished"}
    assert any("synthesize: the stage copied from" in m and "dropped the copy" in m for m in lines)
    assert not list(other.rglob("*.replaced-*"))


def test_data_sizes_keep_the_warm_up_and_vary_only_the_rl_data(recipe_path, tmp_path):
    """OpenRFT Fig. 3: every cell warms up on the same train_size questions (shared between the cells), RL
    trains on the first data_size of them plus their augmented variants (augment.feed: rl)."""
    overrides = ["icl=null", "train_size=4", "augment={backend: template, k: 2, expansion: 3}"]
    lines: list[str] = []
    run_dir = tmp_path / "runs" / "sizes"
    run_recipe(load_recipe(recipe_path, overrides), run_dir, data_sizes=[2, 4], show_progress=False,
               log=lines.append, report=False)
    data = json.loads((run_dir / "run.json").read_text())
    cells = {c["id"]: {k: v["status"] for k, v in c["stages"].items()} for c in data["cells"]}
    assert cells["arithmetic-n2"] == {"augment": "finished", "synthesize": "finished", "sft": "finished",
                                      "rl": "finished", "eval": "finished"}
    # the second cell takes the first cell's warm-up: same questions, same fingerprints
    assert cells["arithmetic-n4"] == {"augment": "skipped", "synthesize": "skipped", "sft": "skipped",
                                      "rl": "finished", "eval": "finished"}
    for cid, originals in (("arithmetic-n2", 2), ("arithmetic-n4", 4)):
        synth = json.loads((run_dir / cid / "synthesize" / "manifest.json").read_text())["stats"]
        rl = json.loads((run_dir / cid / "rl" / "manifest.json").read_text())["stats"]
        assert synth["samples"] == 4  # the warm-up: the 4 original questions in every cell
        assert rl["samples"] == 3 * originals  # each RL question with its two template variants
    assert any("synthesize: copied the finished stage" in m for m in lines)


def test_a_bf16_run_does_not_stand_in_for_an_fp32_one(recipe_path, tmp_path):
    """The generation stages take the recipe's dtype outside their config: it is in their identity all the same
    (the generator's precision), so a rerun in bf16 samples and evaluates again; fp32 identities stay as they were."""
    overrides = ["icl=null", "sft=null", "rl=null", "method=Synth"]
    run_dir = tmp_path / "runs" / "dtype"
    run_recipe(load_recipe(recipe_path, overrides), run_dir, show_progress=False, log=lambda m: None, report=False)
    cell = run_dir / "arithmetic"
    fp32 = json.loads((cell / "eval" / "manifest.json").read_text())
    assert "precision" not in fp32["config"] and "[" not in fp32["stats"]["weights"]
    assert "precision" not in json.loads((cell / "synthesize" / "manifest.json").read_text())["inputs"]
    run_recipe(load_recipe(recipe_path, overrides + ["dtype=bfloat16"]), run_dir, show_progress=False,
               log=lambda m: None, report=False)
    assert _stages(run_dir)[1] == {"synthesize": "finished", "eval": "finished"}
    bf16 = json.loads((cell / "eval" / "manifest.json").read_text())
    assert bf16["config"]["precision"] == "bfloat16"
    assert bf16["stats"]["weights"] == f"{fp32['stats']['weights']} [bfloat16]"
    assert json.loads((cell / "synthesize" / "manifest.json").read_text())["inputs"]["precision"] == "bfloat16"
