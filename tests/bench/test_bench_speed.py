"""Smoke runs of bench/speed.py and bench/mfu.py with tiny settings; no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
TINY = ["--prompts", "2", "-n", "2", "--max-new-tokens", "4", "--sft-batch", "2", "--repeats", "1", "--threads", "1"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_row(row: dict) -> None:
    for key in ("ours", "theirs", "ratio"):
        lo, mid, hi = row[key]
        assert 0 < lo <= mid <= hi, (row["what"], key, row[key])
    assert row["ratio_of_medians"] > 0 and row["better"] in ("lower", "higher")


def test_speed_all_comparisons_in_process(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "speed.json"
    result = load("speed").main(["--model", str(tiny_model_dir), *TINY, "--in-process", "--json", str(out)])
    rows = result["comparisons"]
    assert set(rows) == {"rl_grpo", "rl_gae", "rl_gae-shared", "sft", "gen"}
    for row in rows.values():
        _check_row(row)
    assert rows["rl_grpo"]["completion_tokens_per_step"]["ours"] > 0
    assert rows["sft"]["optimizer_steps"] == {"ours": 2, "theirs": 2}  # warm-up epoch + 1 timed
    assert rows["sft"]["examples"] == 2
    assert rows["gen"]["unit"] == "tok/s" and rows["sft"]["unit"] == "s/epoch"
    assert json.loads(out.read_text())["comparisons"].keys() == rows.keys()
    printed = capsys.readouterr().out
    assert "ratio ours/theirs" in printed and "SFT epoch vs trl SFTTrainer" in printed


def test_speed_sides_in_child_processes_report_memory(tiny_model_dir, capsys):
    result = load("speed").main(["--model", str(tiny_model_dir), *TINY, "--only", "gen"])
    row = result["comparisons"]["gen"]
    _check_row(row)
    mem = row["peak_rss_gb"]
    assert mem["ours"] > 0 and mem["theirs"] > 0 and mem["ratio"] > 0
    assert "generation vs model.generate" in capsys.readouterr().out


def test_mfu_counts_flops_that_match_the_formula(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "mfu.json"
    result = load("mfu").main(["--model", str(tiny_model_dir), *TINY, "--device", "cpu", "--matmul-sizes", "64,128",
                               "--copy-mib", "8", "--json", str(out)])
    assert result["device"] == "cpu" and result["matmul"]["peak_flops"] > 0 and result["bandwidth_bytes_s"] > 0
    assert set(result["training"]) == {"sft", "rl_grpo", "rl_gae"}
    for name, row in result["training"].items():
        assert row["flops"] > 0 and 0 < row["mfu"], name
        # counted FLOPs agree with the LoRA formula (4 per frozen weight per token + attention + LoRA)
        assert 0.9 < row["counted_over_lora_formula"] < 1.1, (name, row["counted_over_lora_formula"])
        assert row["analytic"]["lora_fwd_bwd"] < row["analytic"]["six_nd"]
    gen = result["generation"]
    assert gen["batch_1"]["rows"] == 1 and gen["batch_used"]["rows"] == 4
    for label in ("batch_1", "batch_used"):
        assert gen[label]["tok_s"][1] > 0 and gen[label]["fraction_of_bound"] > 0
    assert json.loads(out.read_text())["training"].keys() == result["training"].keys()
    assert "MFU" in capsys.readouterr().out
