"""The RL length: steps, or epochs over the training questions (ReFT's schedule), and what it does to identities."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from openrft.core.rundir import stable_hash
from openrft.data.loaders import load_bundled
from openrft.pipeline.recipe import RecipeError, load_recipe
from openrft.rl.config import DEFAULT_STEPS, RLConfig
from openrft.rl.config import rl_settings
from openrft.rl.stage import run_rl

PAPER = Path(__file__).resolve().parents[2] / "recipes" / "paper"


def test_epochs_resolve_to_enough_steps_for_the_training_questions():
    assert RLConfig(epochs=2, prompts_per_step=4).resolved_steps(10) == 5  # 20 prompts, 4 a step
    assert RLConfig(epochs=2, prompts_per_step=4).resolved_steps(7) == 4  # 14 prompts: the last step starts pass 3
    assert RLConfig(epochs=300, prompts_per_step=32).resolved_steps(7473) == 70060  # ReFT on GSM8K train
    assert RLConfig(steps=7, prompts_per_step=4).resolved_steps(1000) == 7  # steps ignore the data size
    assert RLConfig().steps == DEFAULT_STEPS and RLConfig(epochs=1).steps is None
    with pytest.raises(ValueError, match="at least one training question"):
        RLConfig(epochs=1).resolved_steps(0)


@pytest.mark.parametrize("kw, message", [
    ({"steps": 5, "epochs": 3}, "steps or as epochs, not both"),
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
])
def test_length_settings_are_checked(kw, message):
    with pytest.raises(ValueError, match=message):
        RLConfig(**kw)


def test_a_recipe_counting_in_epochs_takes_steps_only_in_place_of_them():
    recipe = load_recipe(PAPER / "reft_gsm8k.yaml")
    assert recipe.stage_config("rl").epochs == 300 and recipe.stage_config("rl").steps is None
    with pytest.raises(RecipeError, match="not both.*--set rl.steps=null"):
        load_recipe(PAPER / "reft_gsm8k.yaml", ["rl.steps=2"])
    short = load_recipe(PAPER / "reft_gsm8k.yaml", ["rl.epochs=null", "rl.steps=2"]).stage_config("rl")
    assert short.steps == 2 and short.epochs is None


def test_an_rl_config_without_epochs_keeps_its_identity():
    """The identities of RLConfig() and of a ReFT-like config, hashed as run_rl hashes them, before epochs existed."""
    assert "epochs" not in rl_settings(RLConfig(steps=3))
    assert stable_hash(rl_settings(RLConfig())) == "f28c1f2975c7d72a"
    reft = RLConfig(estimator="gae", steps=300, prompts_per_step=32, n_samples=1, ppo_epochs=2)
    assert stable_hash(rl_settings(reft)) == "55ca9898ae67e74b"
    by_epochs = rl_settings(RLConfig(epochs=3))
    assert by_epochs["epochs"] == 3 and by_epochs["steps"] is None
    # the shared-prompt forward is a speed path with the same maths: turning it off keeps the identity
    assert rl_settings(RLConfig(share_prompts=False)) == rl_settings(RLConfig())
    assert rl_settings(RLConfig(skip_zero_advantage=False)) == rl_settings(RLConfig())  # the same update
    assert rl_settings(RLConfig(rollout_states=False)) == rl_settings(RLConfig())  # the same values


def test_run_rl_counts_epochs_over_its_samples(tiny_model_dir, tmp_path):
    samples = load_bundled("svamp", "test")[:3]
    config = RLConfig(model=str(tiny_model_dir), epochs=1, prompts_per_step=2, n_samples=2, max_new_tokens=4,
                      micro_batch_size=4, lora_rank=2, tensorboard=False, save_every=100)
    result = run_rl(config, tmp_path / "rl", samples, show_progress=False)
    assert result.steps == 2 and len(result.metrics) == 2  # ceil(1 * 3 / 2)
    manifest = json.loads((tmp_path / "rl" / "manifest.json").read_text())
    assert manifest["config"]["epochs"] == 1 and manifest["stats"]["steps"] == 2
    assert run_rl(config, tmp_path / "rl", samples, show_progress=False).steps == 2  # skipped, same count


def test_share_prompts_is_a_flag_that_reaches_the_trainer(tiny_model_dir, tmp_path):
    from openrft.cli.rl import build_parser, make_config
    from openrft.rl.trainer import RLTrainer

    args = build_parser().parse_args(["--data", "svamp", "--no-share-prompts", "--no-skip-zero-advantage",
                                      "--no-rollout-states", "--model", str(tiny_model_dir),
                                      "--out", str(tmp_path / "rl")])
    config = make_config(args)
    assert config.share_prompts is False and RLConfig().share_prompts is True
    assert config.skip_zero_advantage is False and RLConfig().skip_zero_advantage is True
    assert config.rollout_states is False and RLConfig().rollout_states is True
    samples = load_bundled("svamp", "test")[:2]
    trainer = RLTrainer(dataclasses.replace(config, steps=1, lora_rank=2, tensorboard=False), samples,
                        tmp_path / "rl", show_progress=False)
    assert trainer.ac.share_prompts is False


def test_advantage_settings_nest_and_flat_keys_from_before_still_load_with_the_same_identity():
    nested = RLConfig.from_dict({"estimator": "gae", "advantage": {"gamma": 0.9, "whiten": False}})
    with pytest.warns(FutureWarning, match="'whiten_advantages' is now advantage.whiten"):
        flat = RLConfig.from_dict({"estimator": "gae", "gamma": 0.9, "whiten_advantages": False})
    assert flat == nested and nested.advantage.gamma == 0.9 and not nested.advantage.whiten
    # the identity keeps the flat names the stage hashed before the settings nested
    settings = rl_settings(nested)
    assert settings["gamma"] == 0.9 and settings["whiten_advantages"] is False and "advantage" not in settings
    with pytest.raises(ValueError, match="'gamma' is given twice"):
        RLConfig.from_dict({"gamma": 0.9, "advantage": {"gamma": 0.8}})
    with pytest.raises(ValueError, match="step_credit must be"):
        RLConfig.from_dict({"advantage": {"step_credit": "global"}})


def test_group_std_normalisation_is_its_own_setting_and_dr_grpo_turns_it_off():
    assert RLConfig(dr_grpo=True).resolved_advantage.norm_by_std is False
    assert RLConfig(dr_grpo=True).advantage.norm_by_std is True  # the setting itself stays as given
    mean_only = RLConfig(advantage={"norm_by_std": False})
    assert mean_only.resolved_advantage.norm_by_std is False and mean_only.resolved_loss_agg == "seq-mean-token-mean"
    # a new behaviour (before, only dr_grpo turned the std off, with its loss) is a new identity
    assert rl_settings(mean_only) != rl_settings(RLConfig())
    assert rl_settings(mean_only)["advantage"] == {"norm_by_std": False}


def test_recipe_overrides_reach_the_nested_advantage_settings():
    rl = load_recipe(PAPER / "reft_gsm8k.yaml", ["rl.advantage.lam=0.9"]).stage_config("rl")
    assert rl.advantage.lam == 0.9
    with pytest.warns(FutureWarning, match="'lam' is now advantage.lam"):
        old = load_recipe(PAPER / "reft_gsm8k.yaml", ["rl.lam=0.9"]).stage_config("rl")
    assert old.advantage == rl.advantage


def test_the_rl_command_takes_the_advantage_flags_over_its_config_file(tmp_path):
    from openrft.cli import rl as rl_cli

    config = tmp_path / "rl.yaml"
    config.write_text("estimator: gae\ngamma: 0.9\nadvantage:\n  lam: 0.8\n")
    args = rl_cli.build_parser().parse_args(["--out", "x", "--config", str(config), "--gamma", "0.99",
                                             "--no-whiten-advantages"])
    made = rl_cli.make_config(args)
    assert (made.advantage.gamma, made.advantage.lam, made.advantage.whiten) == (0.99, 0.8, False)
