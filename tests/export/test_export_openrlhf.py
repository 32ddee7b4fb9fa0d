"""openrft export openrlhf: JSONL with chat prompts and sample labels, and a reward_func that OpenRLHF can load
and call on real queries (chat-template prompt + response, decoded with special tokens) scoring as openrft does."""

from __future__ import annotations

import json
import re

import pytest
import torch

from openrft.data import Sample, load_sources
from openrft.export import ExportConfig, export_openrlhf, split_response
from openrft.rewards.combine import combine
from openrft.rewards.steps import split_steps
from openrft.tasks import task_for


def completions_for(sample: Sample) -> dict[str, str]:
    gold = task_for(sample).render_answer(sample)
    wrong = re.sub(r"\\boxed\{([^}]*)\}", lambda m: "\\boxed{" + str(int(float(m.group(1))) + 3) + "}", gold)
    return {"gold": gold, "wrong": wrong, "none": "Let me think. I cannot tell.", "empty": ""}


def openrlhf_query(tok, prompt: str, response: str, *, pad_left: int = 0, keep_prompt_tokens: int | None = None):
    """The query OpenRLHF builds: prompt tokens (left-padded or left-truncated) + response tokens + EOS, decoded
    with skip_special_tokens=False."""
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    if keep_prompt_tokens is not None:
        prompt_ids = prompt_ids[-keep_prompt_tokens:]
    response_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return tok.decode([tok.pad_token_id] * pad_left + prompt_ids + response_ids, skip_special_tokens=False)


@pytest.fixture(scope="module")
def gsm8k_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("openrlhf") / "gsm8k"
    return export_openrlhf(ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=5), out)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_records(tmp_path):
    result = export_openrlhf(ExportConfig(data=["arithmetic"], limit=3), tmp_path / "arith")
    assert result.counts == {"train": 3, "test": 3} and not result.files["reward"].read_text().count("def compute_score")
    for split in ("train", "test"):
        rows = read_jsonl(result.files[split])
        samples = load_sources(["arithmetic"], split=split, limit_per_task=3)
        assert [r["id"] for r in rows] == [s.id for s in samples]
        for r, s in zip(rows, samples):
            assert set(r) == {"prompt", "label", "answer", "datasource", "id"}
            assert r["prompt"] == task_for(s).messages(s) and r["answer"] == s.answer and r["datasource"] == s.task
            assert isinstance(r["label"], str) and Sample.from_dict(json.loads(r["label"])).to_dict() == s.to_dict()
    usage = result.usage
    for flag in ("--data.input_key prompt", "--data.label_key label", "--data.apply_chat_template",
                 f"--reward.remote_url {result.files['reward'].resolve()}", "--remote_rm_url", "--eval.dataset"):
        assert flag in usage


def test_reward_func_equals_openrft_grader(gsm8k_export, load_reward_module, bundled_tokenizer):
    tok = bundled_tokenizer
    module = load_reward_module(gsm8k_export.files["reward"], "reward_func")
    rows = read_jsonl(gsm8k_export.files["train"])
    samples = load_sources(["gsm8k"], split="test", limit_per_task=5)
    queries, prompts, labels, expected, correct = [], [], [], [], []
    for i, (row, s) in enumerate(zip(rows, samples)):
        prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        for kind, text in completions_for(s).items():
            queries.append(openrlhf_query(tok, prompt, text, pad_left=i % 3))  # older releases decode left padding
            prompts.append(prompt)
            labels.append(row["label"])
            grade = task_for(s).grade(text, s)
            expected.append(grade.score)
            correct.append(float(grade.correct))
    out = module.reward_func(queries, prompts, labels)
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert isinstance(out["rewards"], torch.Tensor) and out["rewards"].dtype == torch.float32
    assert out["rewards"].tolist() == expected
    assert out["scores"].tolist() == correct
    assert set(out["extra_logs"]) == {"outcome", "correct", "has_answer"}
    assert all(v.shape == (len(queries),) for v in out["extra_logs"].values())
    assert sum(expected) == len(samples)  # exactly the gold rationales are right


def test_reward_func_one_at_a_time_like_the_single_turn_executor(gsm8k_export, load_reward_module, bundled_tokenizer):
    tok = bundled_tokenizer
    module = load_reward_module(gsm8k_export.files["reward"], "reward_func")
    row, s = read_jsonl(gsm8k_export.files["train"])[1], load_sources(["gsm8k"], split="test", limit_per_task=2)[1]
    prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    gold = completions_for(s)["gold"]
    out = module.reward_func([openrlhf_query(tok, prompt, gold)], [prompt], [row["label"]])
    assert out["rewards"].tolist() == [1.0]
    # a prompt cut on the left (prompt_max_len) is still found by its end
    cut = openrlhf_query(tok, prompt, gold, keep_prompt_tokens=20)
    assert prompt not in cut and module.reward_func([cut], [prompt], [row["label"]])["rewards"].tolist() == [1.0]


def test_split_response():
    assert split_response("P: q\nA:", "<pad><pad>P: q\nA: 42</s>") == " 42"
    assert split_response("<|im_start|>assistant\n", "<|im_start|>assistant\nx = 1<|im_end|>\n<|endoftext|>") == "x = 1"
    assert split_response("", "no prompt<|eot_id|>") == "no prompt"
    assert split_response("abc", "completely different") == "completely different"


def test_prm_combination_and_scores_only(tmp_path, prm_server, load_reward_module, bundled_tokenizer):
    url, scorer = prm_server
    tok = bundled_tokenizer
    result = export_openrlhf(ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=3, prm_url=url,
                                          alpha=0.6, agg="mean", partial_credit=0.1), tmp_path / "prm")
    module = load_reward_module(result.files["reward"], "reward_func")
    rows = read_jsonl(result.files["train"])
    queries, prompts, labels, expected = [], [], [], []
    for row, s in zip(rows, load_sources(["gsm8k"], split="test", limit_per_task=3)):
        prompt = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        for text in completions_for(s).values():
            queries.append(openrlhf_query(tok, prompt, text))
            prompts.append(prompt)
            labels.append(row["label"])
            grade = task_for(s).grade(text, s)
            outcome = 1.0 if grade.correct else (0.1 if grade.extracted is not None else 0.0)
            steps = [st.text for st in split_steps(text, "newline")]
            expected.append(combine(outcome, scorer.score(s.question, steps) if steps else [], alpha=0.6, agg="mean"))
    out = module.reward_func(queries, prompts, labels)
    assert out["rewards"].tolist() == pytest.approx(expected, abs=1e-6)
    assert {"process", "n_steps", "no_steps"} <= set(out["extra_logs"])

    bare = export_openrlhf(ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=3, scores_only=True),
                           tmp_path / "bare")
    rewards = load_reward_module(bare.files["reward"], "reward_func").reward_func(queries, prompts, labels)
    assert isinstance(rewards, torch.Tensor) and rewards.tolist() == [1.0, 0.0, 0.0, 0.0] * 3


def test_bad_labels_fail_with_a_clear_message(gsm8k_export, load_reward_module):
    module = load_reward_module(gsm8k_export.files["reward"], "reward_func")
    with pytest.raises(ValueError, match="label 0 is not an openrft sample"):
        module.reward_func(["q 18"], ["q"], ["18"])
    with pytest.raises(ValueError, match="need one each"):
        module.reward_func(["a", "b"], ["a"], ["x"])
