"""openrft export verl: verl's parquet columns and types, lossless samples, and a reward module that verl's
reward managers can call and that scores exactly as openrft's grader (and PRM combination) does."""

from __future__ import annotations

import json
import re

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from openrft.data import Sample, load_sources
from openrft.export import ExportConfig, export_verl
from openrft.rewards.combine import combine
from openrft.rewards.steps import split_steps
from openrft.tasks import task_for


def completions_for(sample: Sample) -> dict[str, str]:
    """Right and wrong completions: the gold rationale, the same with a corrupted final answer, no answer, empty."""
    task = task_for(sample)
    gold = task.render_answer(sample)
    if sample.answer_type == "mcq":
        wrong_letter = next(l for l in sample.labels if l != sample.answer)
        wrong = gold.replace(f"{{{sample.answer}}}", f"{{{wrong_letter}}}")
    else:
        wrong = re.sub(r"\\boxed\{([^}]*)\}", lambda m: "\\boxed{" + str(int(float(m.group(1))) + 7) + "}", gold)
    return {"gold": gold, "wrong": wrong, "none": "I am not sure how to solve this.", "empty": ""}


def verl_call(module, row: dict, solution: str):
    """Call compute_score exactly as verl's naive reward manager does (keyword arguments, extra_info augmented)."""
    extra_info = dict(row["extra_info"])
    extra_info["num_turns"] = None
    extra_info["rollout_reward_scores"] = {}
    return module.compute_score(data_source=row["data_source"], solution_str=solution,
                                ground_truth=row["reward_model"]["ground_truth"], extra_info=extra_info)


@pytest.fixture(scope="module")
def gsm8k_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("verl") / "gsm8k"
    result = export_verl(ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=6), out)
    return result


def test_parquet_has_verls_columns_and_types(tmp_path):
    result = export_verl(ExportConfig(data=["arithmetic"], limit=4), tmp_path / "arith")
    assert result.counts == {"train": 4, "test": 4}
    for split in ("train", "test"):
        table = pq.read_table(result.files[split])
        assert table.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
        schema = table.schema
        assert schema.field("data_source").type == pa.string()
        assert schema.field("prompt").type == pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
        assert schema.field("reward_model").type == pa.struct([("style", pa.string()), ("ground_truth", pa.string())])
        assert {f.name for f in schema.field("extra_info").type} == {"index", "split", "id", "openrft_sample"}
        df = pd.read_parquet(result.files[split])
        samples = load_sources(["arithmetic"], split=split, limit_per_task=4)
        assert len(df) == len(samples)
        for i, (row, s) in enumerate(zip(df.to_dict("records"), samples)):
            assert row["data_source"] == "arithmetic" and row["ability"] == "numeric"
            assert row["reward_model"] == {"style": "rule", "ground_truth": s.answer}
            assert row["extra_info"]["index"] == i and row["extra_info"]["split"] == split
            assert [dict(m) for m in row["prompt"]] == task_for(s).messages(s)
            back = Sample.from_dict(json.loads(row["extra_info"]["openrft_sample"]))
            assert back.to_dict() == s.to_dict()  # lossless, meta included
    # verl's RLHFDataset reads the files with HF datasets: plain lists of message dicts and dict columns
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files={"train": str(result.files["train"])}, cache_dir=str(tmp_path / "hf"))["train"]
    first = ds[0]
    assert first["prompt"][0]["role"] == "user" and isinstance(first["extra_info"], dict)
    assert first["reward_model"]["style"] == "rule"


def test_compute_score_equals_openrft_grader_on_gsm8k(gsm8k_export, load_reward_module):
    module = load_reward_module(gsm8k_export.files["reward"])
    df = pd.read_parquet(gsm8k_export.files["train"])
    samples = load_sources(["gsm8k"], split="test", limit_per_task=6)
    seen = set()
    for row, s in zip(df.to_dict("records"), samples):
        for kind, text in completions_for(s).items():
            got = verl_call(module, row, text)
            grade = task_for(s).grade(text, s)
            assert got["score"] == grade.score, (s.id, kind)
            assert got["correct"] == got["acc"] == float(grade.correct)
            assert got["has_answer"] == float(grade.extracted is not None)
            seen.add((kind, got["score"]))
    assert ("gold", 1.0) in seen and ("wrong", 0.0) in seen and ("none", 0.0) in seen and ("empty", 0.0) in seen
    assert set(got) == {"score", "outcome", "correct", "has_answer", "acc"}


def test_compute_score_batch_matches_single_calls(gsm8k_export, load_reward_module):
    module = load_reward_module(gsm8k_export.files["reward"])
    rows = pd.read_parquet(gsm8k_export.files["train"]).to_dict("records")
    samples = load_sources(["gsm8k"], split="test", limit_per_task=6)
    texts = [completions_for(s)["gold" if i % 2 else "wrong"] for i, s in enumerate(samples)]
    batch = module.compute_score_batch(data_sources=[r["data_source"] for r in rows], solution_strs=texts,
                                       ground_truths=[r["reward_model"]["ground_truth"] for r in rows],
                                       extra_infos=[dict(r["extra_info"]) for r in rows])
    assert [b["score"] for b in batch] == [verl_call(module, r, t)["score"] for r, t in zip(rows, texts)]
    assert [b["score"] for b in batch] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]


def test_mcq_task_round_trip(tmp_path, load_reward_module):
    name = "sciknoweval/retrosynthesis"
    result = export_verl(ExportConfig(data=[name], limit=3), tmp_path / "ske")
    module = load_reward_module(result.files["reward"])
    rows = pd.read_parquet(result.files["test"]).to_dict("records")
    for row, s in zip(rows, load_sources([name], split="test", limit_per_task=3)):
        assert row["ability"] == "mcq" and row["reward_model"]["ground_truth"] == s.answer
        for kind, text in completions_for(s).items():
            assert verl_call(module, row, text)["score"] == task_for(s).grade(text, s).score, kind
        assert verl_call(module, row, completions_for(s)["gold"])["score"] == 1.0
        assert verl_call(module, row, completions_for(s)["wrong"])["score"] == 0.0


def test_prm_combination_through_a_real_http_scorer(tmp_path, prm_server, load_reward_module):
    url, scorer = prm_server
    config = ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=3, prm_url=url, alpha=0.7, agg="min")
    result = export_verl(config, tmp_path / "prm")
    module = load_reward_module(result.files["reward"])
    assert module.CONFIG["prm_url"] == url
    rows = pd.read_parquet(result.files["train"]).to_dict("records")
    for row, s in zip(rows, load_sources(["gsm8k"], split="test", limit_per_task=3)):
        for kind, text in completions_for(s).items():
            got = verl_call(module, row, text)
            steps = [st.text for st in split_steps(text, "newline")]
            step_scores = scorer.score(s.question, steps) if steps else []
            outcome = task_for(s).grade(text, s).score
            assert got["score"] == pytest.approx(combine(outcome, step_scores, alpha=0.7, agg="min")), kind
            assert got["process"] == pytest.approx(min(step_scores) if step_scores else 0.0)
            assert got["n_steps"] == len(steps)
    gold = verl_call(module, rows[0], completions_for(load_sources(["gsm8k"], split="test", limit_per_task=1)[0])["gold"])
    assert 0.7 < gold["score"] < 1.0  # the PRM part is really in the reward


def test_prm_url_env_override(tmp_path, prm_server, load_reward_module, monkeypatch):
    url, _ = prm_server
    result = export_verl(ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=1,
                                      prm_url="http://127.0.0.1:9/unreachable"), tmp_path / "env")
    monkeypatch.setenv("OPENRFT_PRM_URL", url)
    module = load_reward_module(result.files["reward"])
    row = pd.read_parquet(result.files["train"]).to_dict("records")[0]
    assert "process" in verl_call(module, row, "2 + 2 = 4\nSo \\boxed{4}.")


def test_scores_only_returns_a_float(tmp_path, load_reward_module):
    result = export_verl(ExportConfig(data=["arithmetic"], test_split="none", limit=2, scores_only=True), tmp_path / "f")
    module = load_reward_module(result.files["reward"])
    row = pd.read_parquet(result.files["train"]).to_dict("records")[0]
    s = load_sources(["arithmetic"], split="train", limit_per_task=1)[0]
    assert verl_call(module, row, f"The answer is \\boxed{{{s.answer}}}.") == 1.0
    assert verl_call(module, row, "no idea") == 0.0


def test_rows_without_an_openrft_sample_are_refused(gsm8k_export, load_reward_module):
    module = load_reward_module(gsm8k_export.files["reward"])
    with pytest.raises(ValueError, match="openrft_sample"):  # the bundled DataError: a ValueError
        module.compute_score("openai/gsm8k", "#### 18", "18", extra_info={"index": 0, "split": "test"})
    with pytest.raises(ValueError, match="not an openrft sample"):
        module.compute_score("gsm8k", "18", "18", extra_info={"openrft_sample": "{not json"})


def test_reward_function_survives_pickling_to_a_worker(tmp_path, prm_server, load_reward_module):
    """verl's remote reward manager (and OpenRLHF's ray.remote) ship the function to workers with cloudpickle."""
    cloudpickle = pytest.importorskip("cloudpickle")
    url, _ = prm_server
    result = export_verl(ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=1, prm_url=url), tmp_path / "p")
    module = load_reward_module(result.files["reward"])
    row = pd.read_parquet(result.files["train"]).to_dict("records")[0]
    text = completions_for(load_sources(["gsm8k"], split="test", limit_per_task=1)[0])["gold"]
    before = verl_call(module, row, text)  # connects the scorer: an open HTTP client and a lock inside
    shipped = cloudpickle.loads(cloudpickle.dumps(module.compute_score))
    assert verl_call(type("M", (), {"compute_score": staticmethod(shipped)}), row, text) == before
