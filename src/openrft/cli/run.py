"""``openrft run recipe.yaml``: a method row end to end (augment -> synthesize -> sft -> rl -> eval).

Runs the recipe's stages inside ``runs/<name>/``; rerunning skips finished stages and resumes an
interrupted one. ``--set key=value`` overrides recipe keys (``rl.steps=2``, ``train_size=20``,
``icl=null``); ``--tasks all`` fans out over the eight SciKnowEval L3 tasks; ``--data-sizes
25,50,100`` repeats the run per training-set size (OpenRFT Figure 3). Ends with a report.

Recipes: ``recipes/small/*.yaml`` run on the bundled SmolLM2 on CPU; ``recipes/paper/*.yaml``
name the papers' models and settings and need a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openrft run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", help="recipe YAML, e.g. recipes/small/sft_rl_prm_da_icl.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe key (repeatable): rl.steps=2, train_size=20, eval.n=1, icl=null")
    ap.add_argument("--runs-dir", default="runs", help="parent of run directories (default: runs)")
    ap.add_argument("--name", default=None, help="run directory name (default: the recipe's name)")
    ap.add_argument("--tasks", default=None,
                    help="comma-separated datasets replacing the recipe's data; 'all' = the 8 SciKnowEval L3 tasks")
    ap.add_argument("--data-sizes", default=None, metavar="N,N,...",
                    help="run once per training-set size (first N training samples), e.g. 25,50,100,200")
    ap.add_argument("--reuse", action="append", default=[], metavar="RUN_DIR",
                    help="another run whose finished stages may stand in for this run's (repeatable), e.g. the "
                         "synthesis and SFT of an SFT run for an SFT+RL run; a stage is reused only when its "
                         "settings and inputs match")
    ap.add_argument("--dry-run", action="store_true",
                    help="validate the recipe, its models and data and print the plan; load no model, run nothing")
    ap.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def _sizes(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--data-sizes takes comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--data-sizes needs positive sizes, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from openrft.data import DataError
    from openrft.cli.options import request_failure
    from openrft.models.http import RequestFailed
    from openrft.models.loading import ModelNotFoundError
    from openrft.pipeline.recipe import RecipeError, load_recipe
    from openrft.core.rundir import IncompatibleRunError, StageInputError
    from openrft.pipeline.runner import expand_tasks, plan_cells, preflight, run_recipe
    from openrft.retrieval.embedder import EmbedderNotAvailableError
    from openrft.rewards.prm.base import PRMFormatError

    errors = (RecipeError, DataError, ModelNotFoundError, IncompatibleRunError, StageInputError,
              EmbedderNotAvailableError, PRMFormatError, FileNotFoundError, ValueError)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        tasks = expand_tasks(args.tasks, recipe) if args.tasks else None
        sizes = _sizes(args.data_sizes)
        cells = plan_cells(recipe, tasks, sizes)
    except errors as err:
        print(f"openrft run: {err}", file=sys.stderr)
        return 2
    run_dir = Path(args.runs_dir) / (args.name or recipe.name)
    print(f"{recipe.method} ({recipe.name}): {', '.join(recipe.ordered_stages)} on {len(cells)} cell(s) "
          f"[{', '.join(c.id for c in cells)}], model {recipe.model}"
          f"{f', ICL k={recipe.icl.k}' if recipe.icl else ''} -> {run_dir}", file=sys.stderr)
    if recipe.requires == "gpu":
        import torch

        if not torch.cuda.is_available():
            print("openrft run: warning: this recipe is sized for a GPU (requires: gpu) and no CUDA device is "
                  "visible; it will be very slow on CPU (recipes/small/ has CPU-sized variants)", file=sys.stderr)
    if args.dry_run:
        try:  # what a run would check before its first stage: models, data, question lengths, ICL
            preflight(recipe, cells)
        except errors as err:
            print(f"openrft run: {err}", file=sys.stderr)
            return 2
        for stage in recipe.ordered_stages:
            print(f"  {stage}: {recipe.stage_config(stage)}")
        return 0
    try:
        result = run_recipe(recipe, run_dir, tasks=tasks, data_sizes=sizes, show_progress=not args.quiet,
                            report=not args.no_report, reuse_from=args.reuse)
    except KeyboardInterrupt:
        print(f"\nopenrft run: interrupted; rerun the same command to continue ({run_dir / 'run.json'} says where)",
              file=sys.stderr)
        return 130
    except errors as err:
        print(f"openrft run: {err}", file=sys.stderr)
        return 2
    except RequestFailed as err:
        print(request_failure("run", err, f"finished work is kept in {run_dir}, rerun the same command to continue"),
              file=sys.stderr)
        return 1
    print(f"\n{recipe.method}: held-out accuracy (mean over sampled runs)")
    for cell in result.cells:
        acc = result.accuracy.get(cell.id)
        print(f"  {cell.id:<40} {acc:.3f}" if acc is not None else f"  {cell.id:<40} -")
    if result.report is not None:
        print(f"report: {result.report}")
    print(f"run: {run_dir}")
    return 0
