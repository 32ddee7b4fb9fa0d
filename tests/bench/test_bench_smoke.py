"""Smoke runs of the benchmark scripts with tiny settings, so they keep working; no timing is asserted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generation_bench_runs_and_counts_tokens(tiny_model_dir, capsys):
    result = load("generation").main(["--model", str(tiny_model_dir), "--prompts", "4", "--batch-size", "2",
                                      "--max-new-tokens", "4"])
    assert result["prompts"] == 4
    assert result["plain_generate_tok_s"] > 0 and result["openrft_tok_s"] > 0
    assert result["output_len_min_median_max"][-1] <= 4
    assert "ratio_tok_s" in capsys.readouterr().out


def test_graders_bench_agrees_fully_with_gold():
    rows = load("graders").main([])
    assert rows["gsm8k test"]["count"] == 1319
    assert rows["gsm8k test"]["agreement_pct"] == 100.0
    assert rows["traces/all"]["agreement_pct"] == 100.0
    for name, row in rows.items():
        assert row["false_positives"] == 0, name


def test_allocator_bench_compares_both_malloc_modes(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "allocator.json"
    summary = load("allocator").main(["--model", str(tiny_model_dir), "--batch", "2", "--length", "8", "--steps", "3",
                                      "--warmup", "1", "--gen-batch", "2", "--gen-tokens", "4", "--json", str(out)])
    assert set(summary) >= {"system", "kept", "step_ratio", "gen_ratio"}
    assert summary["system"]["active"] is False
    assert summary["kept"]["active"] is True  # CPU-only Linux with glibc, as in CI
    assert summary["step_ratio"] > 0 and summary["kept"]["peak_rss_mb"] > 0
    assert "steady-state step time kept/system" in capsys.readouterr().out
    assert out.is_file()


def test_processes_bench_runs_both_sides(tiny_model_dir, capsys):
    result = load("processes").main(["--model", str(tiny_model_dir), "--prompts", "4", "--batch-size", "2",
                                     "--max-new-tokens", "4", "--repeats", "1"])
    threads, processes = result["runs"]["threads"][0], result["runs"]["processes"][0]
    assert (threads["processes"], threads["threads"], processes["processes"], processes["threads"]) == (1, 2, 2, 1)
    assert threads["tokens"] > 0 and processes["tokens"] > 0 and len(result["ratio_tok_s"]) == 3
    assert "one-thread processes" in capsys.readouterr().out


def test_rl_update_bench_times_the_whole_step_both_ways(tiny_model_dir, capsys):
    result = load("rl_update").main(["--model", str(tiny_model_dir), "--prompts", "2", "-n", "2", "--shots", "1",
                                     "--response-len", "4", "--repeats", "1", "--rollout", "--task", "arithmetic"])
    assert len(result["full_s"]) == len(result["shared_s"]) == len(result["rollout_s"]) == 1
    assert result["step_ratio_median"] > 0
    assert "whole step, shared / full" in capsys.readouterr().out


def test_rl_update_bench_compares_micro_batch_sizes(tiny_model_dir, capsys):
    result = load("rl_update").main(["--model", str(tiny_model_dir), "--prompts", "2", "-n", "2", "--shots", "1",
                                     "--response-len", "4", "--repeats", "2", "--rollout", "--task", "arithmetic",
                                     "--micro-batches", "4,2"])
    assert set(result["seconds"]) == {4, 2} and all(len(t) == 2 for t in result["seconds"].values())
    assert result["rows"] == 4 and "micro-batch   2" in capsys.readouterr().out


def test_decode_step_bench_profiles_a_full_batch(tiny_model_dir, capsys):
    result = load("decode_step").main(["--model", str(tiny_model_dir), "--batch", "4", "--shots", "1",
                                       "--steps", "2", "--profile-steps", "1", "--threads", "1"])
    assert result["batch"] == 4 and result["step_ms"] > 0 and 0 < result["fraction_of_bound"]
    assert result["top_ops"] and "of it" in capsys.readouterr().out


def test_prefix_prefill_bench_labels_both_ways_alike(tiny_model_dir, capsys):
    result = load("prefix_prefill").main(["--model", str(tiny_model_dir), "--questions", "2", "--replies", "2",
                                          "--rollouts", "1", "--shots", "1", "--max-new-tokens", "12",
                                          "--repeats", "1", "--threads", "1"])
    assert len(result["seconds_whole"]) == len(result["seconds_shared"]) == 1
    assert result["replies_with_equal_labels"] == result["replies_labelled"]
    assert result["prefill_tokens_shared"] <= result["prefill_tokens_whole"]
    assert "step prefixes" in capsys.readouterr().out
