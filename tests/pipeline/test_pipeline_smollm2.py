"""The shipped full-method recipe (SFT+RL(PRM)+DA+ICL) end to end on the bundled SmolLM2, shrunk by --set: the PRM is
trained from the policy's own rollouts by the prm stage and rewards RL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrft.cli.main import main

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "small" / "sft_rl_prm_da_icl.yaml"
SHRINK = ["train_size=6", "test_size=4", "icl.k=2", "augment.k=2",
          "synthesize.budget=2", "synthesize.rounds=[2]", "synthesize.max_new_tokens=24", "sft.epochs=1",
          "prm.n_completions=2", "prm.n_rollouts=2", "prm.max_new_tokens=24", "prm.epochs=1",
          "prm.quality_questions=2", "prm.quality_completions=4",
          "rl.steps=2", "rl.prompts_per_step=2", "rl.n_samples=2", "rl.max_new_tokens=24", "rl.save_every=1",
          "rl.tensorboard=false", "eval.n=2", "eval.max_new_tokens=24"]


@pytest.mark.slow
def test_full_recipe_runs_on_smollm2_writes_the_report_and_a_rerun_skips(tmp_path, capsys):
    argv = ["run", str(RECIPE), "--runs-dir", str(tmp_path), "--quiet"] + [a for kv in SHRINK for a in ("--set", kv)]
    assert main(argv) == 0
    out = capsys.readouterr()
    run_dir = tmp_path / "sft_rl_prm_da_icl-small"
    data = json.loads((run_dir / "run.json").read_text())
    stages = data["cells"][0]["stages"]
    assert data["status"] == "finished" and list(stages) == ["augment", "synthesize", "sft", "prm", "rl", "eval"]
    assert all(s["status"] == "finished" for s in stages.values())
    cell = run_dir / "arithmetic"
    metrics = [json.loads(x) for x in (cell / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all("reward/process/mean" in m for m in metrics)  # the PRM part of the reward
    report = (run_dir / "report.md").read_text()
    assert "SFT+RL(PRM)+DA+ICL" in report and "report:" in out.out and "PRM quality" in report
    augment = json.loads((cell / "augment" / "manifest.json").read_text())
    assert augment["stats"]["variants_kept"] > 0  # the template rewriter adds samples; they feed RL only
    assert json.loads((cell / "rl" / "manifest.json").read_text())["stats"]["prm_path"] == str(cell / "prm")
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert any("rl" in p for p in pngs) and any("sft" in p for p in pngs)
    assert all((run_dir / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (run_dir / "report.html").is_file()

    assert main(argv) == 0
    stages = json.loads((run_dir / "run.json").read_text())["cells"][0]["stages"]
    assert {s["status"] for s in stages.values()} == {"skipped"}
