"""Smoke test of bench/efficacy.py on a tiny model: rows x seeds, sampled and greedy evaluation (one pass),
stages shared within a seed, the paired table and the claims (which a random model must not pass)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "efficacy.py"


def _load():
    spec = importlib.util.spec_from_file_location("bench_efficacy", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_interval_and_claims_maths():
    bench = _load()
    d = bench.paired([0.30, 0.35, 0.40], [0.20, 0.30, 0.30])
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.25 / 3) and d["low"] < d["mean"] < d["high"]
    # t(2) = 4.303: half-width = 4.303 * std / sqrt(3)
    assert d["high"] - d["mean"] == pytest.approx(4.303 * d["std"] / 3 ** 0.5)
    assert bench.paired([0.3], [0.2])["low"] is None
    table = {"sft_rl_prm_da_icl": {"sampled": 0.40, "sampled_seed_std": 0.01},
             "vanilla_icl": {"sampled": 0.30, "sampled_seed_std": 0.01},
             "sft_rl_prm": {"sampled": 0.31, "sampled_seed_std": 0.02},
             "sft_rl": {"sampled": 0.30, "sampled_seed_std": 0.02}}
    claims = {c["claim"]: c["holds"] for c in bench._claims(table, {})}
    assert claims["full method >= Vanilla+ICL + 30% relative, beyond 2x seed std"] is True   # +33%, gap 0.1 > 0.02
    assert claims["SFT+RL(PRM) > SFT+RL, beyond 2x seed std"] is False                      # 0.01 < 2 x 0.02
    table["sft_rl_prm_da_icl"]["sampled"] = 0.38                                               # +27%: short of 30%
    assert not bench._claims(table, {})[0]["holds"]
    # beyond 2x the seed std, but the seed-paired interval reaches below zero: does not hold
    table["sft_rl_prm_da_icl"]["sampled"] = 0.40
    wide = {"sft_rl_prm_da_icl - vanilla_icl": {"sampled": {"low": -0.05, "high": 0.25}}}
    assert not bench._claims(table, wide)[0]["holds"]
    # one training seed of a row: the verdict is kept but marked not established
    table["sft_rl_prm_da_icl"]["seeds"] = [0]
    table["vanilla_icl"]["seeds"] = [0, 1, 2]
    assert bench._claims(table, {})[0]["established"] is False


def test_prm_claims_need_the_gain_beyond_the_seeds_spread():
    """best-of-8 claims hold on a seed-paired gain >= 0.03 whose 95% interval is above zero: the gain of the study's
    first five seeds (+0.030 on the mean, interval reaching below zero) does not hold; one seed is not established."""
    bench = _load()

    def results(wmaj: list[float], maj: list[float], auc: float = 0.81) -> list[dict]:
        return [{"row": "sft_rl_prm", "seed": i, "prm_quality": {"auc": auc + 0.01 * i, "constant_auc": 0.5,
                 "best_of_k": {"8": {"weighted_maj": w, "rerank": m - 0.05, "maj": m, "pass": 0.9, "mean": 0.6}}}}
                for i, (w, m) in enumerate(zip(wmaj, maj))]

    def verdicts(rs: list[dict]) -> dict[str, dict]:
        return {c["claim"]: c for c in bench._prm_claims(bench._prm_quality_summary(rs), bench._prm_pairs(rs))}

    noisy = verdicts(results([0.717, 0.683, 0.733, 0.783, 0.717], [0.667, 0.700, 0.700, 0.750, 0.667]))
    vote = noisy["PRM-weighted vote of 8 >= maj@8 + 0.03"]
    assert vote["gain"] == pytest.approx(0.030, abs=1e-3) and vote["holds"] is False and "CI [-0.0" in vote["evidence"]
    assert noisy["best-of-8 with the PRM >= maj@8 + 0.03"]["holds"] is False            # the pick loses to voting
    assert noisy["trained PRM step AUC >= 0.80 (held-out)"]["holds"] is True            # 0.83 on the mean
    steady = verdicts(results([0.74, 0.73, 0.75], [0.70, 0.69, 0.71]))["PRM-weighted vote of 8 >= maj@8 + 0.03"]
    assert steady["holds"] is True and steady["established"] is True
    one = verdicts(results([0.80], [0.70], auc=0.7))
    assert one["PRM-weighted vote of 8 >= maj@8 + 0.03"]["established"] is False
    assert one["trained PRM step AUC >= 0.80 (held-out)"]["holds"] is False


def test_efficacy_bench_runs_rows_and_seeds_on_a_tiny_model(tmp_path, tiny_model_dir, capsys):
    tiny = ["train_size=4", "test_size=3", "eval.n=2", "eval.max_new_tokens=8", "synthesize.budget=2",
            "synthesize.rounds=[2]", "synthesize.max_new_tokens=8", "sft.epochs=1", "rl.steps=1",
            "rl.prompts_per_step=2", "rl.n_samples=2", "rl.max_new_tokens=8", "rl.tensorboard=false",
            "prm.n_completions=2", "prm.n_rollouts=2", "prm.max_new_tokens=8", "prm.epochs=1",
            "prm.quality_questions=2", "prm.quality_completions=4", "icl.k=2"]
    argv = ["--rows", "vanilla,vanilla_icl,sft,sft_rl,sft_rl_prm", "--tasks", "arithmetic", "--seeds", "0,1",
            "--runs-dir", str(tmp_path), "--quiet", "--set", f"model={tiny_model_dir}",
            "--judge", f"judge:{tiny_model_dir}"] + [a for kv in tiny for a in ("--set", kv)]
    summary = _load().main(argv)
    out = capsys.readouterr().out
    table = summary["tasks"]["arithmetic"]["rows"]
    assert list(table) == ["vanilla", "vanilla_icl", "sft", "sft_rl", "sft_rl_prm"]
    assert all(r["seeds"] == [0, 1] and 0.0 <= r["sampled"] <= 1.0 and 0.0 <= r["greedy"] <= 1.0
               for r in table.values())
    assert set(summary["tasks"]["arithmetic"]["paired"]) == {
        "vanilla_icl - vanilla", "sft - vanilla", "sft_rl - sft", "sft_rl_prm - sft_rl",  # each row vs its parent
        "sft - vanilla_icl", "sft_rl_prm - vanilla_icl"}  # and the claims' comparisons
    assert "total wall time" in out and "paired diff" in out and "HOLD" in out
    seed1 = tmp_path / "arithmetic" / "seed1"
    rl_row = json.loads((seed1 / "sft_rl" / "run.json").read_text())["cells"][0]["stages"]
    assert rl_row["synthesize"]["status"] == "skipped" and rl_row["sft"]["status"] == "skipped"  # warm-up reused
    assert not (seed1 / "sft_rl-greedy").exists()  # greedy decoding is part of the row's one evaluation pass
    records = (seed1 / "sft_rl" / "arithmetic" / "eval" / "completions.jsonl").read_text().splitlines()
    assert len(records) == 3 and all(len(json.loads(r)["samples"]) == 2 and "greedy" in json.loads(r) for r in records)
    prm_rows = [r for r in summary["results"] if r["row"] == "sft_rl_prm"]
    assert all(r["prm_quality"] is not None and "auc" in r["prm_quality"] for r in prm_rows)
    # the judge scores the held-out steps of the first seed only
    quality = [json.loads((tmp_path / "arithmetic" / f"seed{s}" / "sft_rl_prm" / "arithmetic" / "prm" / "quality"
                           / "quality.json").read_text())["scorers"] for s in (0, 1)]
    assert ["judge" in q for q in quality] == [True, False]
    # seeds differ: the seed reaches the stages (the two SFT adapters are not the same bytes)
    a = (tmp_path / "arithmetic" / "seed0" / "sft" / "arithmetic" / "sft" / "adapter" / "adapter_model.safetensors")
    b = (seed1 / "sft" / "arithmetic" / "sft" / "adapter" / "adapter_model.safetensors")
    assert a.read_bytes() != b.read_bytes()
    assert json.loads((tmp_path / "efficacy.json").read_text())["settings"]["seeds"] == [0, 1]
    # a later invocation with one row keeps every finished row of earlier ones in its tables
    again = _load().main([*argv[:1], "vanilla", *argv[2:]])
    assert list(again["tasks"]["arithmetic"]["rows"]) == list(table)
    assert sum(r["row"] == "vanilla" for r in again["results"]) == 2  # replaced, not added: one per seed


def test_jobs_run_each_task_and_seed_in_its_own_process(tmp_path, tiny_model_dir):
    common = ["--rows", "vanilla", "--runs-dir", str(tmp_path), "--quiet", "--jobs", "2", "--threads", "2",
              "--set", f"model={tiny_model_dir}", "--set", "test_size=2", "--set", "eval.n=1",
              "--set", "eval.max_new_tokens=4"]
    summary = _load().main(["--tasks", "arithmetic", "--seeds", "0,1", *common])
    assert summary["tasks"]["arithmetic"]["rows"]["vanilla"]["seeds"] == [0, 1]
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert logs == ["arithmetic-seed0.log", "arithmetic-seed1.log"]
    assert "seed 1" in (tmp_path / "logs" / "arithmetic-seed1.log").read_text()
    assert summary["settings"]["jobs"] == 2
    # a unit that fails is named, and the invocation fails
    with pytest.raises(SystemExit, match="1 of 2"):
        _load().main(["--tasks", "arithmetic,no-such-task", "--seeds", "0", *common])
