"""openrft export (CLI): bad input refused with a message and exit code 2, the output folder guarded,
the manifest, and few-shot prompts."""

from __future__ import annotations

import hashlib
import json

import pytest

from openrft.cli.main import main as openrft_main


def run(capsys, *argv):
    rc = openrft_main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_verl_export_prints_the_verl_settings_and_writes_a_manifest(tmp_path, capsys):
    out_dir = tmp_path / "arith"
    rc, out, err = run(capsys, "verl", "--data", "arithmetic", "--out", out_dir, "--limit", 3)
    assert rc == 0, err
    assert "wrote 3 train, 3 test prompts" in out
    assert f"reward.custom_reward_function.path={(out_dir / 'openrft_reward.py').resolve()}" in out
    assert f"data.train_files={(out_dir / 'train.parquet').resolve()}" in out and "compute_score_batch" in out
    manifest = json.loads((out_dir / "openrft_export.json").read_text())
    assert manifest["engine"] == "verl" and manifest["counts"] == {"train": 3, "test": 3}
    assert manifest["settings"]["data"] == ["arithmetic"] and manifest["settings"]["limit"] == 3
    for entry in manifest["files"].values():
        assert hashlib.sha256((out_dir / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    assert (out_dir / "README.md").read_text().count("custom_reward_function.path") >= 2


def test_unknown_data_is_refused(tmp_path, capsys):
    rc, _, err = run(capsys, "verl", "--data", "gsm8", "--out", tmp_path / "x")
    assert rc == 2 and "unknown bundled dataset 'gsm8'" in err and "gsm8k" in err
    rc, _, err = run(capsys, "openrlhf", "--data", "reft/mathqa", "--out", tmp_path / "y")  # only a 'test' split
    assert rc == 2 and "no split 'train'" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    rc, _, err = run(capsys, "verl", "--out", tmp_path / "z")
    assert rc == 2 and "no data given" in err


def test_non_empty_output_folder_needs_overwrite(tmp_path, capsys):
    out_dir = tmp_path / "busy"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    rc, _, err = run(capsys, "openrlhf", "--data", "arithmetic", "--out", out_dir, "--limit", 2)
    assert rc == 2 and "already holds 1 entries (notes.txt)" in err and "--overwrite" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["notes.txt"]

    rc, _, err = run(capsys, "openrlhf", "--data", "arithmetic", "--out", out_dir, "--limit", 2, "--overwrite")
    assert rc == 0, err
    assert {"notes.txt", "train.jsonl", "test.jsonl", "openrft_reward.py"} <= {p.name for p in out_dir.iterdir()}
    # re-exported without a test split: the earlier export's test file goes, the user's file stays
    rc, _, err = run(capsys, "openrlhf", "--data", "arithmetic", "--out", out_dir, "--limit", 2, "--overwrite",
                     "--test-split", "none")
    assert rc == 0, err
    assert not (out_dir / "test.jsonl").exists() and (out_dir / "notes.txt").read_text() == "mine"

    a_file = tmp_path / "file"
    a_file.write_text("x")
    rc, _, err = run(capsys, "verl", "--data", "arithmetic", "--out", a_file)
    assert rc == 2 and "is a file" in err


@pytest.mark.parametrize("extra, message", [
    (["--prm-url", "ftp://host/score"], "http(s)://"),
    (["--prm-url", "http://h:1/s", "--alpha", "1.5"], "alpha must be in [0, 1]"),
    (["--step-rule", "sentences"], "unknown step rule"),
    (["--partial-credit", "1"], "partial_credit"),
    (["--test-split", "train"], "both 'train'"),
    (["--limit", "0"], "limit >= 1"),
    (["--agg", "median"], "unknown step aggregator"),
])
def test_bad_settings_are_refused_before_writing(tmp_path, capsys, extra, message):
    out_dir = tmp_path / "never"
    rc, _, err = run(capsys, "verl", "--data", "arithmetic", "--out", out_dir, *extra)
    assert rc == 2 and message in err
    assert not out_dir.exists()


@pytest.mark.slow
def test_icl_prompts_carry_retrieved_training_examples(tmp_path):
    from openrft.export import ExportConfig, export_openrlhf

    result = export_openrlhf(ExportConfig(data=["arithmetic"], limit=6, icl_k=2), tmp_path / "icl")
    for split in ("train", "test"):
        for line in result.files[split].read_text().splitlines():
            row = json.loads(line)
            roles = [m["role"] for m in row["prompt"]]
            assert roles == ["user", "assistant", "user", "assistant", "user"]
            own = row["prompt"][-1]["content"]
            assert all(m["content"] != own for m in row["prompt"][:-1])  # never its own question as a shot
