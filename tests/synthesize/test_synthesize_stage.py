"""The synthesize stage: resume after an interruption or kill -9, the HTTP path, reruns, the SFT reader."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from synth_helpers import Scripted, key, numeric

from openrft.models.backends.openai_http import OpenAIGenerator
from openrft.core.rundir import IncompatibleRunError, StageInputError
from openrft.serve import make_server
from openrft.synthesize import OPEN_STATE, TRACES, SynthesizeConfig, load_traces, run_synthesize

HERE = Path(__file__).parent

# Six questions in chunks of three; they close in different rounds (sizes 2, 4, 4), one never.
CONFIG = SynthesizeConfig(budget=10, rounds=(2, 4), temperature=1.0, max_new_tokens=3, seed=7, questions_per_batch=3)
SAMPLES = [numeric(i, 100 + i) for i in range(6)]
SCRIPT = {key(0): {1: "\\boxed{100}"}, key(1): {5: "\\boxed{101}"}, key(2): {9: "so \\boxed{102}"},
          key(3): {4: "\\boxed{103}", 6: "again \\boxed{103}"}, key(5): {2: "\\boxed{105}"}}


def scripted(inner, **kw):
    return Scripted(inner, seed=CONFIG.seed, sizes=CONFIG.settings.sizes, inject=SCRIPT, **kw)


def test_resume_after_interrupt_matches_an_uninterrupted_run(tiny_generator, tmp_path):
    full = run_synthesize(SAMPLES, scripted(tiny_generator), CONFIG, tmp_path / "full", show_progress=False)
    assert [r["attempts"] for r in full.records] == [2, 6, 10, 6, 10, 2]
    assert [r["fallback"] for r in full.records] == [False, False, False, False, True, False]

    broken = scripted(tiny_generator, fail_on=3)  # chunk 0, round 3: question 2 still open
    with pytest.raises(KeyboardInterrupt):
        run_synthesize(SAMPLES, broken, CONFIG, tmp_path / "resumed", show_progress=False)
    out = tmp_path / "resumed"
    before = [json.loads(line)["id"] for line in (out / TRACES).read_text().splitlines()]
    assert before == ["num/0", "num/1"]
    assert json.loads((out / OPEN_STATE).read_text())["round"] == 2

    again = scripted(tiny_generator)
    resumed = run_synthesize(SAMPLES, again, CONFIG, out, show_progress=False)
    asked = {q for c in again.calls for q in c["questions"]}
    assert not any(key(i) in q for q in asked for i in (0, 1)), "closed questions are not sampled again"
    assert again.calls[0]["round"] == 2 and again.calls[0]["n"] == 4
    assert (out / TRACES).read_bytes() == (tmp_path / "full" / TRACES).read_bytes()
    assert resumed.records == full.records
    assert not (out / OPEN_STATE).exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["stats"]["samples"] == 6


def test_finished_stage_is_skipped_and_other_settings_refused(tiny_generator, tmp_path):
    config = SynthesizeConfig(budget=2, rounds=(2,), max_new_tokens=2)
    run_synthesize(SAMPLES[:2], tiny_generator, config, tmp_path, show_progress=False)
    gen = Scripted(tiny_generator)
    again = run_synthesize(SAMPLES[:2], gen, config, tmp_path, show_progress=False)
    assert gen.calls == [] and len(again.records) == 2
    with pytest.raises(IncompatibleRunError, match="other settings"):
        run_synthesize(SAMPLES[:2], gen, SynthesizeConfig(budget=3, rounds=(2,), max_new_tokens=2), tmp_path,
                       show_progress=False)
    with pytest.raises(StageInputError, match="duplicate"):
        run_synthesize([SAMPLES[0], SAMPLES[0]], gen, config, None, show_progress=False)


CHILD = textwrap.dedent("""
    import sys
    from synth_helpers import Scripted
    from openrft.models.backends.hf import TransformersGenerator
    import test_synthesize_stage as t
    inner = TransformersGenerator.from_pretrained(sys.argv[1], batch_size=8)
    t.run_synthesize(t.SAMPLES, t.scripted(inner, delay_s=0.4), t.CONFIG, sys.argv[2], show_progress=False)
""")


def test_kill_9_leaves_a_loadable_file_and_the_rerun_completes_it(tiny_generator, tiny_model_dir, tmp_path):
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_model_dir), str(out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if (out / TRACES).exists() and (out / TRACES).read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    raw = (out / TRACES).read_text()
    assert raw.endswith("\n"), "no partial line"
    lines = [json.loads(line) for line in raw.splitlines()]
    assert 1 <= len(lines) < 6 and all(r["sample"] and r["attempts"] for r in lines)
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert load_traces(out)  # the SFT reader takes the file as it is

    resumed = run_synthesize(SAMPLES, scripted(tiny_generator), CONFIG, out, show_progress=False)
    ids = [json.loads(line)["id"] for line in (out / TRACES).read_text().splitlines()]
    assert sorted(ids) == sorted(s.id for s in SAMPLES) and len(ids) == 6
    assert [r["attempts"] for r in resumed.records] == [2, 6, 10, 6, 10, 2]
    assert all(r in resumed.records for r in lines), "the lines written before the kill are kept as they were"


def test_http_teacher_through_a_real_openrft_serve(tiny_generator, tmp_path):
    config = SynthesizeConfig(budget=6, rounds=(2, 4), temperature=1.0, max_new_tokens=3, seed=1,
                              backend="openai", teacher="tiny-teacher")
    with make_server(tiny_generator, "tiny-teacher").start() as server:
        client = OpenAIGenerator(server.url + "/v1", "tiny-teacher", cache_dir=tmp_path / "cache")
        gen = Scripted(client, seed=1, sizes=config.settings.sizes, inject={key(1): {3: "It is \\boxed{11}."}})
        try:
            res = run_synthesize([numeric(1, 11), numeric(2, 12)], gen, config, tmp_path / "out",
                                 show_progress=False)
        finally:
            client.close()
    solved, unsolved = res.records
    assert (solved["attempts"], solved["first_correct"], solved["teacher"]) == (6, 3, "tiny-teacher")
    assert unsolved["fallback"] and unsolved["attempts"] == 6 and unsolved["truncated"] > 0
    assert [c["n"] for c in gen.calls] == [2, 4]


def test_load_traces_skips_a_torn_last_line_and_rejects_a_corrupt_middle(tmp_path):
    rec = {"id": "a", "sample": numeric(1, 3).to_dict(), "traces": [{"text": "t", "extracted": "3"}],
           "fallback": False}
    path = tmp_path / TRACES
    path.write_text(json.dumps(rec) + "\n" + '{"id": "b", "sam')
    assert [(s.id, text, fb) for s, text, fb in load_traces(path)] == [("num/1", "t", False)]
    path.write_text('{"id": "b", "sam\n' + json.dumps(rec) + "\n")
    with pytest.raises(StageInputError, match=":1: corrupt"):
        load_traces(path)
    with pytest.raises(StageInputError, match="run 'openrft synthesize'"):
        load_traces(tmp_path / "nowhere")


def test_gold_source_uses_the_dataset_rationales_without_sampling(tmp_path):
    """ReFT's SFT data: GSM8K rationales (SVAMP equations) + the answer line; no rationale -> bare-answer fallback."""
    from openrft.data.loaders import load_sources
    from openrft.synthesize.stage import SynthesizeConfig, load_traces, run_synthesize

    gsm = load_sources(["gsm8k"], split="test", limit_per_task=4)
    svamp = load_sources(["svamp"], split="test", limit_per_task=2)
    bare = gsm[0].replace(id="no-rationale", meta={})
    result = run_synthesize(gsm + svamp + [bare], None, SynthesizeConfig(source="gold"), tmp_path / "syn")
    by_id = {r["id"]: r for r in result.records}
    for s in gsm:
        rec = by_id[s.id]
        assert not rec["fallback"] and rec["teacher"] == "gold" and rec["attempts"] == 0
        text = rec["traces"][0]["text"]
        assert text == f"{s.meta['rationale']}\nThe answer is \\boxed{{{s.answer}}}."  # the rationale once
    assert by_id[svamp[0].id]["traces"][0]["text"].startswith("( 76.0 - 25.0 ) = 51")
    assert by_id["no-rationale"]["fallback"] and result.stats["fallback_fraction"] == 1 / 7
    assert by_id["no-rationale"]["traces"][0]["text"] == f"The answer is \\boxed{{{gsm[0].answer}}}."
    assert len(load_traces(tmp_path / "syn" / "traces.jsonl")) == 7
    again = run_synthesize(gsm + svamp + [bare], None, SynthesizeConfig(source="gold"), tmp_path / "syn")
    assert again.records == result.records
    with pytest.raises(ValueError, match="needs a generator"):
        run_synthesize(gsm, None, SynthesizeConfig(), tmp_path / "other")
