"""bench/check_engines.py without the package index: hydra's defaults list composed as verl's config loader does,
OpenRLHF's parser rebuilt from its source, and the checks that flag an unknown key, flag or value."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "check_engines.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_check_engines", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_defaults_list_composition(tmp_path):
    bench = _load()
    _write(tmp_path, {
        "trainer.yaml": "defaults:\n  - engine: dp\n  - actor@roles.actor: ${engine}_actor\n  - extra\n  - _self_\n"
                        "roles:\n  actor:\n    lr: 1e-6\ntop: 1\n",
        "engine/dp.yaml": "# @package _global_\nengine: dp\n",
        "actor/dp_actor.yaml": "defaults:\n  - ../optim@optim: adam\n  - actor\n  - _self_\nstrategy: fsdp\nlr: 0.5\n",
        "actor/actor.yaml": "lr: 0.1\nppo_epochs: 1\n",
        "optim/adam.yaml": "betas: [0.9, 0.99]\n",
        "extra.yaml": "top: 0\nlogger: [console]\n",
    })
    got = bench.leaves(bench.compose(tmp_path, Path("trainer.yaml")))
    assert got == {"engine": "dp", "roles.actor.optim.betas": [0.9, 0.99], "roles.actor.lr": 1e-6,
                   "roles.actor.ppo_epochs": 1, "roles.actor.strategy": "fsdp", "top": 1, "logger": ["console"]}
    assert bench.check_verl(got, ["roles.actor.lr=3e-05", "top=2", "logger=[console]"]) == []
    assert bench.check_verl(got, ["roles.actor.lrr=1", "roles.actor.strategy=x", "top=yes", "logger=console"]) == [
        "unknown key roles.actor.lrr", "top=yes: verl's default is 1", "logger=console: verl's default is ['console']"]


def test_openrlhf_parser_from_its_source(tmp_path):
    bench = _load()
    source = tmp_path / "train_ppo_ray.py"
    source.write_text(
        "import argparse\nfrom datetime import datetime\nimport ray\nfrom openrlhf.x import y\n\n"
        "def train(args):\n    pass\n\n"
        "if __name__ == '__main__':\n"
        "    parser = argparse.ArgumentParser()\n"
        "    parser.add_argument('--algo.estimator', choices=['gae', 'rloo'], default='gae')\n"
        "    for prefix in ('actor', 'critic'):\n"
        "        parser.add_argument(f'--{prefix}.adam.lr', type=float, default=1e-6)\n"
        "    parser.add_argument('--ckpt.name', default='ppo_%s' % datetime.now().strftime('%m'))\n"
        "    parser.add_argument('--eps', type=float, nargs=2)\n"
        "    args = parser.parse_args()\n    train(args)\n")
    parser = bench.openrlhf_parser(source)
    assert {"--algo.estimator", "--actor.adam.lr", "--critic.adam.lr", "--eps"} <= set(parser._option_string_actions)
    assert bench.check_openrlhf(parser, ["--actor.adam.lr", "3e-5", "--eps", "0.2", "0.3"]) == []
    problems = bench.check_openrlhf(parser, ["--actor.adam", "3e-5", "--algo.estimator", "ppo"])
    assert problems[0] == "unknown flag --actor.adam" and "invalid choice: 'ppo'" in problems[1]
