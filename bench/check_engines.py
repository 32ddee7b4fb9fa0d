"""Do the launch scripts of ``openrft export`` speak the engines' language? Checked against verl 0.9.1 and OpenRLHF 0.11.2.

Not a test (it needs the package index): it installs both releases without their dependencies into a temporary
folder (``pip install --no-deps --target``), exports every recipe with an ``rl`` stage (``recipes/paper``,
``recipes/small``) and a few variants that reach the other estimators and KL placements, for both engines, and
checks each launch script:

* verl: every hydra override key exists in verl's ``ppo_trainer.yaml`` as composed from its defaults list (the
  group files under ``verl/trainer/config``, interpolated option names, ``@package`` placement), is a leaf there,
  and holds a value of the default's kind (bool, number, list). The composition itself is compared with the
  ``_generated_ppo_trainer.yaml`` verl ships, so a composer bug cannot hide an unknown key.
* OpenRLHF: the argument parser ``train_ppo_ray`` builds (its ``__main__`` block up to ``parse_args``, read with
  ``ast`` and run with argparse alone: importing the module needs ray and torch) knows every flag by its exact name
  and parses the script's arguments (types, choices, ``nargs``).

    python bench/check_engines.py [--keep DIR] [--json out.json]

Prints one row per export and a summary; exits 1 when a key or flag is unknown or a value is refused.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RELEASES = ("verl==0.9.1", "openrlhf==0.11.2")
#: variants on a small recipe that reach what the recipes do not: other estimators, KL placements, clips
VARIANTS = {
    "rloo": ["rl.estimator=rloo"],
    "reinforce_pp+baseline": ["rl.estimator=reinforce_pp", "rl.advantage.rpp_baseline=true"],
    "grpo, KL in the reward, k2": ["rl.dr_grpo=false", "rl.kl_in=reward", "rl.kl_estimator=k2"],
    "gae, dual clip, no value clip, minibatches": ["rl.estimator=gae", "rl.dual_clip=3.0", "rl.value_clip=null",
                                                   "rl.minibatch_size=16", "rl.clip_high=0.28",
                                                   "rl.entropy_coef=0.001", "rl.loss_agg=token-mean"],
    "no KL, separate critic": ["rl.estimator=gae", "rl.kl_coef=0", "rl.critic=smollm2-135m", "rl.warmup_steps=2"],
}


def install(target: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target",
                    str(target), *RELEASES], check=True)


# ----------------------------------------------------------------------------------------- verl
def _merge(base: dict, over: dict) -> dict:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _placed(package: str, data: dict) -> dict:
    for part in reversed([p for p in package.split(".") if p]):
        data = {part: data}
    return data


def compose(root: Path, rel: Path, package: str = "", choices: dict | None = None) -> dict:
    """The config ``rel`` (relative to verl's config folder) with its defaults list applied, placed at ``package``."""
    choices = {} if choices is None else choices
    text = (root / rel).read_text(encoding="utf-8")
    if re.search(r"^#\s*@package\s+_global_\s*$", text, re.M):
        package = ""
    data = yaml.safe_load(text) or {}
    defaults = data.pop("defaults", None) or []
    if "_self_" not in defaults:
        defaults = [*defaults, "_self_"]
    out: dict = {}
    for entry in defaults:
        if entry == "_self_":
            _merge(out, _placed(package, data))
            continue
        if isinstance(entry, str):  # a sibling config, at this config's package
            _merge(out, compose(root, rel.parent / f"{entry}.yaml", package, choices))
            continue
        ((key, option),) = entry.items()
        group, _, at = key.partition("@")
        option = re.sub(r"\$\{(\w+)\}", lambda m: choices[m[1]], str(option))
        choices.setdefault(group, option)
        group_dir = Path(os.path.normpath(rel.parent / group))
        sub_package = ".".join(p for p in (package, at or group_dir.name) if p)
        _merge(out, compose(root, group_dir / f"{option}.yaml", sub_package, choices))
    return out


_FLOAT = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value of every leaf; ``1e-6`` (a string to YAML 1.1, a float to OmegaConf) as a float."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(leaves(value, path + "."))
        else:
            out[path] = float(value) if isinstance(value, str) and _FLOAT.fullmatch(value) else value
    return out


def _kind_ok(default: object, value: str) -> bool:
    """Whether ``value`` (as the script writes it) is of the default's kind: a bool, a number (verl's YAML writes
    ``0`` for float fields too, so ints and floats are one kind), a list; None and strings take anything."""
    if isinstance(default, bool):
        return value in ("true", "false")
    if isinstance(default, (int, float)):
        return _FLOAT.fullmatch(value) is not None
    if isinstance(default, list):
        return value.startswith("[") and value.endswith("]")
    return True


def check_verl(config: dict[str, object], args: list[str]) -> list[str]:
    problems = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key not in config:
            problems.append(f"unknown key {key}")
        elif isinstance(config[key], str) and config[key].startswith("${"):
            continue  # an interpolation: any value
        elif not _kind_ok(config[key], value):
            problems.append(f"{key}={value}: verl's default is {config[key]!r}")
    return problems


# ------------------------------------------------------------------------------------- OpenRLHF
def openrlhf_parser(source: Path) -> argparse.ArgumentParser:
    """The parser ``train_ppo_ray`` builds: its ``__main__`` block up to ``parse_args``, run with the module's
    standard-library imports alone (argparse, datetime, ...)."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)) and not getattr(n, "level", 0)
               and all((a.name if isinstance(n, ast.Import) else n.module or "").split(".")[0]
                       in sys.stdlib_module_names for a in n.names)]
    block = next(n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test))
    body = []
    for stmt in block.body:
        if "parse_args" in ast.unparse(stmt):
            break
        body.append(stmt)
    module = ast.Module(body=[*imports, *body], type_ignores=[])
    namespace: dict = {}
    exec(compile(module, str(source), "exec"), namespace)  # noqa: S102 - argparse calls of the installed release
    return namespace["parser"]


def check_openrlhf(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    problems = [f"unknown flag {a}" for a in args if a.startswith("--") and a not in parser._option_string_actions]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(args)
    except SystemExit:
        problems.append(err.getvalue().strip().splitlines()[-1])
    return problems


# ------------------------------------------------------------------------------------- exports
def script_args(script: Path, bin_dir: Path) -> list[str]:
    """What the script hands the engine, after the shell expanded it (a stand-in python3 prints its arguments)."""
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "python3"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}).stdout.splitlines()
    return out[2:]  # after "-m <module>"


def exports(folder: Path) -> list[tuple[str, str, Path]]:
    """``(engine, what, script)`` for every recipe with an rl stage and every variant, exported for both engines."""
    from openrft.cli.main import main as openrft
    from openrft.pipeline.recipe import load_recipe

    runs = []
    for path in sorted([*ROOT.glob("recipes/paper/*.yaml"), *ROOT.glob("recipes/small/*.yaml")]):
        if not path.name.startswith("_") and "rl" in load_recipe(path).stages:
            runs.append((str(path.relative_to(ROOT)), ["--recipe", str(path)]))
    base = ["--recipe", str(ROOT / "recipes/small/sft_rl.yaml")]
    runs += [(f"recipes/small/sft_rl.yaml + {name}", base + [a for s in sets for a in ("--set", s)])
             for name, sets in VARIANTS.items()]
    runs.append(("no recipe (openrft rl defaults)", ["--data", "arithmetic"]))
    out = []
    for engine, script in (("verl", "run_verl.sh"), ("openrlhf", "run_openrlhf.sh")):
        for i, (what, argv) in enumerate(runs):
            dest = folder / engine / str(i)
            with contextlib.redirect_stdout(io.StringIO()):
                rc = openrft(["export", engine, "--out", str(dest), "--overwrite", *argv])
            if rc != 0:
                raise SystemExit(f"openrft export {engine} {shlex.join(argv)} failed")
            out.append((engine, what, dest / script))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep", default=None, help="work in this folder and keep it (default: a temporary one)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    start = time.time()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="openrft-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    install(work / "site")
    config_root = work / "site" / "verl" / "trainer" / "config"
    composed = leaves(compose(config_root, Path("ppo_trainer.yaml")))
    shipped = leaves(yaml.safe_load((config_root / "_generated_ppo_trainer.yaml").read_text(encoding="utf-8")))
    composition = {"keys": len(composed), "missing_vs_generated": sorted(set(shipped) - set(composed)),
                   "extra_vs_generated": sorted(set(composed) - set(shipped))}
    print(f"verl ppo_trainer.yaml composed from its defaults: {len(composed)} keys; vs the shipped "
          f"_generated_ppo_trainer.yaml: {len(composition['missing_vs_generated'])} missing, "
          f"{len(composition['extra_vs_generated'])} extra")
    parser = openrlhf_parser(work / "site" / "openrlhf" / "cli" / "train_ppo_ray.py")
    print(f"OpenRLHF train_ppo_ray parser: {len(parser._option_string_actions)} option strings")
    rows = []
    for engine, what, script in exports(work / "exports"):
        got = script_args(script, work / "bin")
        problems = check_verl(composed, got) if engine == "verl" else check_openrlhf(parser, got)
        n = len(got) if engine == "verl" else sum(a.startswith("--") for a in got)
        rows.append({"engine": engine, "export": what, "settings": n, "problems": problems})
        print(f"{engine:9} {what:72} {n:3} {'keys ' if engine == 'verl' else 'flags'} "
              f"{'ok' if not problems else '; '.join(problems)}")
    bad = [r for r in rows if r["problems"]] or composition["missing_vs_generated"]
    print(f"{len(rows)} launch scripts, {sum(r['settings'] for r in rows)} settings checked, "
          f"{sum(len(r['problems']) for r in rows)} problems; {time.time() - start:.0f} s ({', '.join(RELEASES)})")
    if args.json:
        Path(args.json).write_text(json.dumps({"releases": RELEASES, "composition": composition, "rows": rows},
                                              indent=2) + "\n")
    if not args.keep:
        import shutil

        shutil.rmtree(work)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
