"""Every stage's CLI flags come from its config dataclass in one way, and say nothing the dataclass does not."""

from __future__ import annotations

import dataclasses

import pytest

from openrft.cli import augment, eval as eval_cli, export, orm, prm, rl, sft, synthesize
from openrft.cli.options import config_from_args, explicit_values


def _classes():
    from openrft.augment.stage import AugmentConfig
    from openrft.evaluate.runner import EvalConfig
    from openrft.export.common import ExportConfig
    from openrft.reward_models.orm_train import ORMTrainConfig
    from openrft.reward_models.prm_train import PRMTrainConfig
    from openrft.rl.config import RLConfig
    from openrft.sft.stage import SFTStageConfig as SFTConfig
    from openrft.synthesize.stage import SynthesizeConfig

    return {"augment": AugmentConfig, "eval": EvalConfig, "export": ExportConfig, "orm": ORMTrainConfig,
            "prm": PRMTrainConfig, "rl": RLConfig, "sft": SFTConfig, "synthesize": SynthesizeConfig}


#: per command: its parser, the least argv it accepts, the config fields that argv sets, and how the command
#: turns parsed args into its config
COMMANDS = {
    "augment": (augment.build_parser, ["--data", "arithmetic", "--out", "x"], {}, None),
    "eval": (eval_cli.build_parser, [], {}, None),
    "export": (export.build_parser, ["verl", "--out", "x", "--data", "arithmetic"], {"data": ["arithmetic"]},
               lambda cls, a: cls(**explicit_values(a, cls))),
    "orm": (orm.build_parser, ["train", "--out", "x", "--data", "arithmetic"], {"data": ["arithmetic"]}, None),
    "prm": (prm.build_parser, ["train", "--out", "x", "--labels", "l.jsonl"], {"labels": ["l.jsonl"]}, None),
    "rl": (rl.build_parser, ["--out", "x"], {"output_dir": "x"}, lambda cls, a: rl.make_config(a)),
    "sft": (sft.build_parser, ["--traces", "t.jsonl", "--out", "x"], {}, lambda cls, a: sft.make_config(a)),
    "synthesize": (synthesize.build_parser, ["--data", "arithmetic"], {}, None),
}
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_cli_defaults_are_the_dataclass_defaults(command):
    cls = _classes()[command]
    build, argv, given, make = COMMANDS[command]
    args = build().parse_args(argv)
    config = (make or config_from_args)(cls, args)
    default = cls(**given)
    differ = [f.name for f in dataclasses.fields(cls) if getattr(config, f.name) != getattr(default, f.name)]
    assert not differ, f"openrft {command} without flags changes {differ} from the dataclass defaults"


@pytest.mark.parametrize("command, argv, expected", [
    ("prm", ["train", "--out", "x", "--data", "a", "--data", "b", "c"], ["a", "b", "c"]),
    ("orm", ["train", "--out", "x", "--data", "a", "--data", "b"], ["a", "b"]),
    ("rl", ["--out", "x", "--data", "a", "b"], ["a", "b"]),
])
def test_list_flags_take_several_values_and_repeat(command, argv, expected):
    assert COMMANDS[command][0]().parse_args(argv).data == expected


def test_tuple_flags_are_comma_separated():
    args = synthesize.build_parser().parse_args(["--data", "arithmetic", "--rounds", "2,4"])
    assert config_from_args(_classes()["synthesize"], args).rounds == (2, 4)
    with pytest.raises(SystemExit):
        synthesize.build_parser().parse_args(["--data", "arithmetic", "--rounds", "two"])
