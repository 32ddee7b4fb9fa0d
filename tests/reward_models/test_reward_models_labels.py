"""Step labels: the record type and its JSONL files, CHAMP, and Math-Shepherd estimation from rollouts."""

from __future__ import annotations

import json

import pytest
import torch

from openrft.data.sample import DataError, Sample
from openrft.models.backends.base import Completion, Generator
from openrft.reward_models.champ import champ_step_labels, load_champ
from openrft.reward_models.labels import (
    StepExample, continuation_prompt, count_reply_continuations, estimate_step_labels, hard_labels, read_step_examples,
    rollout_step_examples, write_step_examples,
)

torch.set_num_threads(1)


def numeric(i: int, a: int, b: int) -> Sample:
    return Sample(id=f"add/{i}", task="add", question=f"What is {a} + {b}?", answer=str(a + b), answer_type="numeric")


# ---------------------------------------------------------------------------- records and files
def test_step_example_validation():
    ex = StepExample("q", ["a", "b"], [1, 0.5])
    assert ex.labels == (1.0, 0.5) and ex.steps == ("a", "b")
    with pytest.raises(ValueError, match="2 steps but 1 labels"):
        StepExample("q", ["a", "b"], [1])
    with pytest.raises(ValueError, match=r"item 0 is 1.5; labels are numbers in \[0, 1\]"):
        StepExample("q", ["a"], [1.5])
    with pytest.raises(ValueError, match="'steps': empty"):
        StepExample("q", [], [])
    with pytest.raises(ValueError, match="'question'"):
        StepExample(" ", ["a"], [1])
    assert hard_labels([0.0, 0.25, 1.0]) == [0.0, 1.0, 1.0]


def test_jsonl_round_trip(tmp_path):
    examples = [StepExample("q1", ["a", "b"], [1, 0], source="x", meta={"k": 1}), StepExample("q2", ["c"], [0.25])]
    path = write_step_examples(tmp_path / "labels.jsonl", examples)
    back = read_step_examples(path)
    assert back == examples and back[0].meta == {"k": 1}
    assert read_step_examples([path, path]) == examples * 2


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_bad_labels_files_name_file_line_and_field(tmp_path):
    good = json.dumps({"question": "q", "steps": ["a"], "labels": [1]})
    f = _write(tmp_path / "wrong_field.jsonl", [good, json.dumps({"question": "q", "step": ["a"], "labels": [1]})])
    with pytest.raises(DataError, match=r"wrong_field.jsonl:2: unknown field 'step'; valid: question, steps"):
        read_step_examples(f)
    f = _write(tmp_path / "mismatch.jsonl", [good, good, json.dumps({"question": "q", "steps": ["a", "b"],
                                                                     "labels": [1]})])
    with pytest.raises(DataError, match=r"mismatch.jsonl:3: fields 'steps'/'labels': 2 steps but 1 labels"):
        read_step_examples(f)
    f = _write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(DataError, match=r"empty.jsonl: no step examples \(the file is empty\)"):
        read_step_examples(f)
    f = _write(tmp_path / "broken.jsonl", [good, '{"question": '])
    with pytest.raises(DataError, match=r"broken.jsonl:2: malformed JSON"):
        read_step_examples(f)
    f = _write(tmp_path / "missing.jsonl", [json.dumps({"question": "q", "steps": ["a"]})])
    with pytest.raises(DataError, match=r"missing.jsonl:1: field 'labels' is missing"):
        read_step_examples(f)
    f = _write(tmp_path / "types.jsonl", [json.dumps({"question": "q", "steps": "a b", "labels": [1]})])
    with pytest.raises(DataError, match=r"types.jsonl:1: field 'steps': expected a list of strings"):
        read_step_examples(f)
    with pytest.raises(DataError, match="not found"):
        read_step_examples(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------- CHAMP
def test_champ_step_labels_first_wrong_step_and_after_are_zero():
    text = "Let x = 2.\nThen 2x = 5.\nSo x = 2.5.\n\nAnswer: 2.5"
    wrong = text.index("Then")
    assert champ_step_labels(text, wrong) == (["Let x = 2.", "Then 2x = 5.", "So x = 2.5.", "Answer: 2.5"],
                                              [1.0, 0.0, 0.0, 0.0])
    # a span that starts inside a step marks that whole step wrong
    assert champ_step_labels(text, text.index("2x"))[1] == [1.0, 0.0, 0.0, 0.0]
    assert champ_step_labels(text, None)[1] == [1.0] * 4


def test_load_champ():
    examples = load_champ()
    assert len(examples) == 540  # 68 problems x 4 models x 2 prompt settings, less 4 missing annotations
    for e in examples:
        labels = list(e.labels)
        assert labels == sorted(labels, reverse=True)  # ones, then zeros
        assert e.source.startswith("champ:")
        assert (e.meta["first_wrong_step"] is None) == (0.0 not in labels)
    no_mistake = sum(e.meta["first_wrong_step"] is None for e in examples)
    assert no_mistake == 96
    assert len(load_champ(include_correct=False)) == 540 - no_mistake


# ---------------------------------------------------------------------------- Math-Shepherd estimation
def test_continuation_prompt_renders_like_the_generator(bundled_tokenizer):
    from openrft.models.backends.hf import render_prompt

    chat = [{"role": "user", "content": "What is 2 + 3?"}]
    text = continuation_prompt(bundled_tokenizer, chat, "")
    assert render_prompt(bundled_tokenizer, text) == render_prompt(bundled_tokenizer, chat)
    assert continuation_prompt(bundled_tokenizer, chat, "2 + 3 = 5").endswith("<|im_start|>assistant\n2 + 3 = 5")
    assert continuation_prompt(bundled_tokenizer, "raw: ", "x") == "raw: x"


class ScriptedGenerator(Generator):
    """Continues a prompt with the right answer when the prefix so far has no 'oops', else with a wrong one;
    records its calls."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[tuple[int, int]] = []

    def generate(self, prompts, params, progress=None):
        self.calls.append((len(prompts), params.n))
        out = []
        for p in prompts:
            if not isinstance(p, str):  # a policy prompt: write three steps, the second one wrong for "7 + 1"
                q = p[-1]["content"]
                bad = "7 + 1" in q
                out.append([Completion("First step.\n" + ("oops, a slip.\n" if bad else "fine.\n") + "The answer is "
                                       + ("0" if bad else "8"), 10)] * params.n)
                continue
            right = "oops" not in p.split("assistant\n")[-1]
            out.append([Completion(f"\nThe answer is {'8' if right and k % 2 == 0 else '3'}", 5)
                        for k in range(params.n)])
        return out


def test_estimate_step_labels_fractions_and_one_call(bundled_tokenizer):
    gen = ScriptedGenerator(bundled_tokenizer)
    samples = [numeric(0, 5, 3), numeric(1, 5, 3), numeric(2, 5, 3)]
    completions = ["Start.\nok\nThe answer is 8", "Start.\noops\nThe answer is 2", ""]
    examples = estimate_step_labels(gen, samples, completions, n_rollouts=4)
    assert gen.calls == [(4, 4)]  # both step prefixes of both non-empty completions, one call
    assert len(examples) == 2  # the empty completion has no steps
    # right continuations are sampled at even k only: half of 4 -> 0.5; after "oops" none are right
    assert [list(e.labels) for e in examples] == [[0.5, 0.5, 1.0], [0.5, 0.0, 0.0]]
    assert examples[0].steps == ("Start.", "ok", "The answer is 8")
    assert examples[0].question == "What is 5 + 3?" and examples[0].source == "math_shepherd"
    assert examples[0].meta["completion_correct"] is True and examples[1].meta["completion_correct"] is False


def test_rollout_step_examples_scripted(bundled_tokenizer):
    gen = ScriptedGenerator(bundled_tokenizer)
    examples = rollout_step_examples(gen, [numeric(0, 5, 3), numeric(1, 7, 1)], n_completions=2, n_rollouts=2,
                                     share_prefixes=False)
    assert gen.calls == [(2, 2), (8, 2)]  # policy round, then all 2 x 2 completions x 2 step prefixes at once
    assert [e.meta["completion_index"] for e in examples] == [0, 1, 0, 1]
    assert [list(e.labels) for e in examples[:2]] == [[0.5, 0.5, 1.0]] * 2
    # "What is 7 + 1?" (gold 8): the slip makes rollouts fail, and the final answer 0 is wrong
    assert [list(e.labels) for e in examples[2:]] == [[0.5, 0.0, 0.0]] * 2
    # the default: both replies of a question are the same text, so each of its 2 step prefixes is rolled out
    # once (2 questions x 2 prefixes) and both replies get the same labels
    gen = ScriptedGenerator(bundled_tokenizer)
    shared = rollout_step_examples(gen, [numeric(0, 5, 3), numeric(1, 7, 1)], n_completions=2, n_rollouts=2)
    assert gen.calls == [(2, 2), (4, 2)]
    assert [(e.steps, e.labels, e.meta) for e in shared] == [(e.steps, e.labels, e.meta) for e in examples]


def test_shared_prefixes_are_rolled_out_once_and_others_apart(bundled_tokenizer):
    gen = ScriptedGenerator(bundled_tokenizer)
    # replies 0 and 1 share their first step; reply 2 differs from the start; the other question repeats reply 0
    samples = [numeric(0, 5, 3)] * 3 + [numeric(1, 4, 4)]
    completions = ["Start.\nok\nThe answer is 8", "Start.\noops\nThe answer is 2", "Begin.\nok\nThe answer is 8",
                   "Start.\nok\nThe answer is 8"]
    examples = estimate_step_labels(gen, samples, completions, n_rollouts=4)
    # prefixes: q0 "Start." (shared by replies 0 and 1), "Start.\nok", "Start.\noops", "Begin.", "Begin.\nok";
    # q1 (another question, the same text): "Start.", "Start.\nok" again
    assert gen.calls == [(7, 4)]
    assert [list(e.labels) for e in examples] == [[0.5, 0.5, 1.0], [0.5, 0.0, 0.0], [0.5, 0.5, 1.0],
                                                  [0.5, 0.5, 1.0]]


def test_reply_continuations_count_each_reply_as_one_more_rollout(bundled_tokenizer):
    samples = [numeric(0, 5, 3)] * 3 + [numeric(1, 4, 4)]
    completions = ["Start.\nok\nThe answer is 8", "Start.\noops\nThe answer is 2", "Begin.\nok\nThe answer is 8",
                   "Start.\nok\nThe answer is 8"]
    gen = ScriptedGenerator(bundled_tokenizer)
    examples = estimate_step_labels(gen, samples, completions, n_rollouts=4, reply_continuations=True)
    assert gen.calls == [(7, 4)]  # no more decoding than without
    # q0's "Start." is 2 of 4 rollouts plus replies 0 (right) and 1 (wrong): 3/6; "Start.\nok" 2 of 4 plus
    # reply 0: 3/5; "Start.\noops" 0 of 4 plus reply 1: 0/5; the last step stays the reply's own grade
    assert [list(e.labels) for e in examples] == [[0.5, 0.6, 1.0], [0.5, 0.0, 0.0], [0.6, 0.6, 1.0],
                                                  [0.6, 0.6, 1.0]]
    assert all(e.meta["reply_continuations"] for e in examples)
    # labelled one reply at a time, each reply's own 4 rollouts of "Start." pool with the other's: (2 + 2 + 1) / 10
    alone = estimate_step_labels(ScriptedGenerator(bundled_tokenizer), samples, completions, n_rollouts=4,
                                 share_prefixes=False, reply_continuations=True)
    assert [e.labels[0] for e in alone[:2]] == [0.5, 0.5]
    assert list(alone[1].labels[1:]) == [0.0, 0.0]


def test_reply_continuations_need_math_shepherd_meta():
    with pytest.raises(ValueError, match="no completion_correct, n_rollouts"):
        count_reply_continuations([StepExample("q?", ["a", "b"], [1, 1], meta={"sample_id": "q"})])


def test_rollout_step_examples_tiny_generator(tiny_generator):
    samples = [numeric(i, i + 2, i + 3) for i in range(3)]
    calls = []
    original = tiny_generator.generate

    def counting(prompts, params, progress=None):
        calls.append(len(prompts))
        return original(prompts, params, progress)

    tiny_generator.generate = counting
    try:
        examples = rollout_step_examples(tiny_generator, samples, n_completions=2, n_rollouts=3, max_new_tokens=12,
                                         temperature=1.0, step_rule="re:\\s+", share_prefixes=False)
    finally:
        del tiny_generator.generate
    assert len(calls) == 2 and calls[0] == 3
    assert examples, "random-model replies split on whitespace have steps"
    for e in examples:
        assert len(e.labels) == len(e.steps) >= 1
        assert all(0.0 <= x <= 1.0 for x in e.labels)
        assert all(abs(x * 3 - round(x * 3)) < 1e-9 for x in e.labels[:-1])  # fractions of 3 rollouts
        assert e.labels[-1] in (0.0, 1.0)
    assert calls[1] == sum(len(e.steps) - 1 for e in examples)
