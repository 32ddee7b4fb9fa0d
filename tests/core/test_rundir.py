"""Run-directory primitives: torn JSONL lines, manifests that skip, mismatches that refuse to mix outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from openrft.core.rundir import (
    IncompatibleRunError,
    JsonlStore,
    Manifest,
    atomic_write_json,
    begin_stage,
    finish_stage,
)


def test_store_drops_a_torn_last_line_and_rewrites_clean(tmp_path):
    store = JsonlStore(tmp_path / "x.jsonl")
    store.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
    with open(store.path, "a") as f:
        f.write('{"id": "c", "v"')
    assert set(store.load()) == {"a", "b"}
    assert store.path.read_text().endswith("\n")
    store.append([{"id": "c", "v": 3}])
    assert [json.loads(x)["id"] for x in store.path.read_text().splitlines()] == ["a", "b", "c"]


def test_store_refuses_corruption_in_the_middle(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(IncompatibleRunError, match=":2"):
        JsonlStore(path).load()


def test_kill_9_during_appends_leaves_only_whole_records(tmp_path):
    path = tmp_path / "k.jsonl"
    code = (
        "import sys; from openrft.core.rundir import JsonlStore\n"
        f"s = JsonlStore({str(path)!r})\n"
        "i = 0\n"
        "while True:\n"
        "    s.append([{'id': str(i), 'pad': 'x' * 5000}]); i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 20
    while time.time() < deadline and (not path.exists() or path.stat().st_size < 200_000):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    records = JsonlStore(path).load()
    assert len(records) > 10
    assert sorted(map(int, records)) == list(range(len(records)))
    assert all(r["pad"] == "x" * 5000 for r in records.values())


def test_finished_stage_with_same_settings_is_skipped(tmp_path):
    m, done = begin_stage(tmp_path, "sft", {"lr": 1e-4}, {"data": "abc"}, seed=1)
    assert not done
    finish_stage(tmp_path, m, loss=0.5)
    again, done = begin_stage(tmp_path, "sft", {"lr": 1e-4}, {"data": "abc"}, seed=1)
    assert done and again.stats["loss"] == 0.5
    _, done = begin_stage(tmp_path, "sft", {"lr": 2e-4}, {"data": "abc"}, seed=1)
    assert not done, "changed config reruns the stage"


def test_partial_outputs_from_other_settings_are_not_mixed(tmp_path):
    begin_stage(tmp_path, "synthesize", {"budget": 8}, {}, resume_keys=["traces.jsonl"])
    (tmp_path / "traces.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(IncompatibleRunError, match="other settings"):
        begin_stage(tmp_path, "synthesize", {"budget": 16}, {}, resume_keys=["traces.jsonl"])


def test_run_directory_from_an_incompatible_version_is_named(tmp_path):
    m = Manifest(stage="eval", config={})
    atomic_write_json(tmp_path / "manifest.json", {**m.__dict__, "format_version": 0})
    with pytest.raises(IncompatibleRunError, match="run-format 0"):
        begin_stage(tmp_path, "eval", {}, {})
