"""The examples_for hook: order, caching, index reuse, and identical prompts across stages."""

from __future__ import annotations

import json

import pytest

from openrft.data.loaders import load_bundled
from openrft.retrieval import make_examples_for
from openrft.retrieval.index import MANIFEST_FILE
from openrft.tasks.base import task_for

CHEM = "sciknoweval/chemical_calculation"


@pytest.fixture(scope="module")
def train():
    return load_bundled(CHEM, "train")[:20]


@pytest.fixture(scope="module")
def test_items():
    return load_bundled(CHEM, "test")[:4]


def test_examples_are_the_k_nearest_most_similar_last(counting, train, test_items):
    examples_for = make_examples_for(train, k=3, embedder=counting)
    built = counting.texts
    examples_for.prefetch(test_items)  # one batched pass
    assert counting.texts == built + len(test_items)
    got = [examples_for(s) for s in test_items]
    assert counting.texts == built + len(test_items)  # served from the cache
    assert got == [examples_for.index.query(s, 3)[::-1] for s in test_items]
    assert examples_for(train[5]) == examples_for.index.query(train[5], 3)[::-1]  # a single call works too


def test_saved_index_is_reused_and_rebuilt_when_samples_change(counting, train, tmp_path):
    make_examples_for(train, k=2, embedder=counting, index_dir=tmp_path / "ix")
    assert counting.texts == len(train)
    again = make_examples_for(train, k=2, embedder=counting, index_dir=tmp_path / "ix")
    assert counting.texts == len(train)  # loaded, nothing re-encoded
    assert train[0].id not in {s.id for s in again(train[0])}
    assert counting.texts == len(train) + 1  # the query
    make_examples_for(train[:10], k=2, embedder=counting, index_dir=tmp_path / "ix")
    assert counting.texts == len(train) + 1 + 10  # other samples: rebuilt
    assert json.loads((tmp_path / "ix" / MANIFEST_FILE).read_text())["count"] == 10


def test_k_too_large_raises_unless_allow_fewer(embedder, train, test_items):
    with pytest.raises(ValueError, match="k=30 .*20 training sample"):
        make_examples_for(train, k=30, embedder=embedder)(test_items[0])
    assert len(make_examples_for(train, k=30, embedder=embedder, allow_fewer=True)(test_items[0])) == 20


class _Recorder:
    """A generator that records the prompts of its first call, then stops the stage."""

    class Stop(Exception):
        pass

    name = "recorder"

    def __init__(self):
        self.prompts = None

    def generate(self, prompts, params, progress=None):
        self.prompts = [json.dumps(p) for p in prompts]
        raise self.Stop


def test_every_stage_builds_the_same_prompt_with_k_shots(embedder, train, test_items, tiny_model_dir, tmp_path):
    from openrft.evaluate.runner import EvalConfig, evaluate
    from openrft.rl.config import RLConfig
    from openrft.rl.trainer import RLTrainer
    from openrft.sft.dataset import SFTExample, to_rows
    from openrft.synthesize.stage import SynthesizeConfig, run_synthesize

    k = 3
    examples_for = make_examples_for(train, k=k, embedder=embedder)
    samples = test_items[:2] + train[:2]  # held-out items and training items (these must not see themselves)
    expected = []
    for s in samples:
        shots = examples_for(s)
        msgs = task_for(s).messages(s, shots)
        assert [m["role"] for m in msgs] == ["user", "assistant"] * k + ["user"]
        assert msgs[-1]["content"] == task_for(s).user_prompt(s)
        assert s.id not in {x.id for x in shots}
        assert msgs[-3]["content"] == task_for(s).user_prompt(examples_for.index.query(s, 1)[0])  # nearest last
        expected.append(json.dumps(msgs))

    rec = _Recorder()
    with pytest.raises(_Recorder.Stop):
        evaluate(rec, samples, EvalConfig(n=1, temperature=0.0, max_new_tokens=4), examples_for=examples_for,
                 show_progress=False)
    assert rec.prompts == expected

    rec = _Recorder()
    with pytest.raises(_Recorder.Stop):
        run_synthesize(samples, rec, SynthesizeConfig(budget=4, rounds=(1,), questions_per_batch=8),
                       examples_for=examples_for, show_progress=False)
    assert sorted(set(rec.prompts)) == sorted(expected)

    rows = to_rows([SFTExample(sample=s, trace="The answer is \\boxed{A}.", fallback=False, line=i)
                    for i, s in enumerate(samples)], examples_for)
    assert [json.dumps(r["prompt"]) for r in rows] == expected

    config = RLConfig(model=str(tiny_model_dir), steps=1, prompts_per_step=2, n_samples=2, max_new_tokens=4,
                      lora_rank=2, tensorboard=False, seed=0)
    trainer = RLTrainer(config, samples, tmp_path / "rl", examples_for=examples_for, show_progress=False)
    assert [json.dumps(p) for p in trainer.prompts] == expected


def test_with_traces_shows_verified_traces_in_shots_and_shares_retrieval(counting, train, test_items, tmp_path):
    """SciKnowEval ships no worked solutions: a shot shows its question's correct synthesized trace once the
    pipeline attaches them, the bare answer otherwise; retrieval is not redone."""
    from openrft.synthesize.stage import verified_traces
    from openrft.tasks import TRACE_KEY

    plain = make_examples_for(train, k=3, embedder=counting).prefetch(test_items)
    shots = plain(test_items[0])
    solved, unsolved = shots[0], shots[1]
    records = [
        {"id": solved.id, "task": solved.task, "sample": solved.to_dict(), "fallback": False,
         "traces": [{"text": "Two moles react, so \\boxed{%s}" % solved.answer}, {"text": "second trace"}]},
        {"id": unsolved.id, "task": unsolved.task, "sample": unsolved.to_dict(), "fallback": True,
         "traces": [{"text": "The answer is \\boxed{%s}." % unsolved.answer}]},
    ]
    (tmp_path / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    traces = verified_traces(tmp_path)
    assert traces == {solved.id: "Two moles react, so \\boxed{%s}" % solved.answer}  # first correct one only
    encoded = counting.texts
    worked = plain.with_traces(traces)
    got = worked(test_items[0])
    assert counting.texts == encoded and got == shots  # same shots (Sample equality ignores meta), no re-encoding
    task = task_for(test_items[0])
    replies = [m["content"] for m in task.messages(test_items[0], got)[1::2]]
    assert replies[0] == traces[solved.id] and replies[1] == task.render_answer(unsolved)
    assert TRACE_KEY not in plain(test_items[0])[0].meta  # the original hook is unchanged
    assert "1 verified traces" in repr(worked)
