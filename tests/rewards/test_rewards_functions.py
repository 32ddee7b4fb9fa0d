"""User reward functions: loading by module or file path, trl-style calls, and their validation."""

from __future__ import annotations

import math
import textwrap

import pytest

from openrft.data.sample import Sample
from openrft.rewards.functions import (
    RewardFunction,
    RewardFunctionError,
    call_reward_function,
    load_reward_function,
    parse_function_spec,
    sample_columns,
)

SAMPLES = [
    Sample(id="a", task="chem", question="Q1?", choices=("x", "y"), answer="B", answer_type="mcq", meta={"k": 1}),
    Sample(id="b", task="gsm8k", question="Q2?", answer="4", answer_type="numeric"),
]
CODE = textwrap.dedent('''
    def mentions_answer(prompts, completions, answer, **kwargs):
        return [None if a is None else float(a in c) for c, a in zip(completions, answer)]

    def echo_columns(prompts, completions, **kwargs):
        echo_columns.seen = kwargs
        return [0.0] * len(completions)

    def too_few(prompts, completions, **kwargs):
        return [1.0]

    def not_finite(prompts, completions, **kwargs):
        return [1.0, float("nan")]

    def sometimes(prompts, completions, task, **kwargs):
        return [1.0 if t == "gsm8k" else None for t in task]

    LIMIT = 3
''')


@pytest.fixture
def rewards_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(CODE)
    return path


def test_load_by_file_and_by_module(rewards_file, monkeypatch):
    fn = load_reward_function(f"{rewards_file}:mentions_answer")
    assert fn(prompts=["p", "p"], completions=["B it is", "5"], answer=["B", "4"]) == [1.0, 0.0]
    monkeypatch.syspath_prepend(str(rewards_file.parent))
    assert load_reward_function("my_rewards:too_few")(None, ["x"]) == [1.0]
    rf = RewardFunction.from_spec(f"{rewards_file}:sometimes@0.25")
    assert (rf.name, rf.weight) == ("sometimes", 0.25)


def test_clear_loading_errors(rewards_file):
    with pytest.raises(RewardFunctionError, match="no module named 'no_such_pkg'"):
        load_reward_function("no_such_pkg.rewards:fn")
    with pytest.raises(RewardFunctionError, match="does not exist"):
        load_reward_function(f"{rewards_file.parent}/missing.py:fn")
    with pytest.raises(RewardFunctionError, match="has no attribute 'nope'.*mentions_answer"):
        load_reward_function(f"{rewards_file}:nope")
    with pytest.raises(RewardFunctionError, match="'LIMIT' is a int, not callable"):
        load_reward_function(f"{rewards_file}:LIMIT")
    with pytest.raises(RewardFunctionError, match="expected 'package.module:function'"):
        load_reward_function("just_a_name")
    with pytest.raises(RewardFunctionError, match="weight 'heavy' is not a number"):
        parse_function_spec("m:f@heavy")
    assert parse_function_spec(r"C:\rewards\fmt.py:short@2") == (r"C:\rewards\fmt.py", "short", 2.0)


def test_call_passes_sample_columns(rewards_file):
    fn = load_reward_function(f"{rewards_file}:echo_columns")
    call_reward_function(fn, ["p1", "p2"], ["c1", "c2"], SAMPLES)
    assert fn.seen == sample_columns(SAMPLES)
    assert fn.seen["choices"] == [["x", "y"], None] and fn.seen["meta"] == [{"k": 1}, {}]
    call_reward_function(fn, ["p1", "p2"], ["c1", "c2"], SAMPLES, answer=["z", "z"])
    assert fn.seen["answer"] == ["z", "z"] and fn.seen["id"] == ["a", "b"]


def test_call_validation_names_function_counts_and_index(rewards_file):
    load = lambda name: load_reward_function(f"{rewards_file}:{name}")  # noqa: E731
    with pytest.raises(ValueError, match="'too_few' returned 1 values for 2 completions"):
        call_reward_function(load("too_few"), ["p", "p"], ["a", "b"], SAMPLES)
    with pytest.raises(ValueError, match="'not_finite' returned a non-finite value nan at index 1"):
        call_reward_function(load("not_finite"), ["p", "p"], ["a", "b"], SAMPLES)
    got = call_reward_function(load("sometimes"), ["p", "p"], ["a", "b"], SAMPLES)
    assert got.values == [0.0, 1.0] and got.applicable == [False, True]
    with pytest.raises(ValueError, match="'bad' returned 'high' at index 0"):
        call_reward_function(lambda **kw: ["high", 1.0], ["p", "p"], ["a", "b"], name="bad")
    with pytest.raises(ValueError, match="returned float, expected a list of 2 floats"):
        call_reward_function(lambda **kw: math.pi, ["p", "p"], ["a", "b"], name="scalar")
