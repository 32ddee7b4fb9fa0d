"""The pipeline's ``prm`` stage on the tiny random Llama: Math-Shepherd labelling maths, resume after a kill,
bad settings, training from the policy's backbone, quality measures, and the stage inside ``openrft run``."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from openrft.data.sample import Sample
from openrft.models.backends.base import Completion
from openrft.models.backends.openai_http import GenerationError
from openrft.pipeline.recipe import RecipeError, load_recipe
from openrft.pipeline.runner import run_recipe
from openrft.reward_models.labels import COMPLETIONS_FILE, STEP_LABELS_FILE, label_policy_rollouts
from openrft.reward_models.prm_stage import PRMStageConfig, run_prm_stage
from openrft.reward_models.quality import best_of_k_quality, first_error_quality, reply_quality, step_quality
from openrft.rewards.prm import loader as prm_loader

torch.set_num_threads(1)


def _samples(n: int, prefix: str = "q") -> list[Sample]:
    return [Sample(id=f"{prefix}{i}", task="t", question=f"Calculate {i} + 2.", answer=str(i + 2),
                   answer_type="numeric") for i in range(n)]


class ScriptedGenerator:
    """A generator whose replies are fixed: policy replies by question, continuations by the prefix's last step.

    The maths of the labels can then be checked exactly: a continuation of a prefix whose last step is
    ``"good"`` states the gold answer, one of ``"bad"`` a wrong one; so a step's soft label is 1.0 or 0.0,
    and the last step's label is the reply's own grade."""

    def __init__(self, tokenizer, replies: dict[str, str]):
        self.tokenizer, self.replies, self.calls = tokenizer, replies, []

    def generate(self, prompts, params, progress=None):
        self.calls.append(len(prompts))
        out = []
        for p in prompts:
            if isinstance(p, str):  # a continuation prompt: chat template + reply prefix
                gold = p.split("Calculate ")[-1].split(" + ")[0]
                last = p.rstrip("\n").rsplit("\n", 1)[-1]
                text = f"\nThe answer is {int(gold) + 2}." if last.startswith("good") else "\nThe answer is -1."
                out.append([Completion(text=text, num_tokens=3)] * params.n)
            else:
                question = p[-1]["content"]
                key = next(k for k in self.replies if f"Calculate {k} + 2." in question)
                out.append([Completion(text=self.replies[key], num_tokens=8)] * params.n)
        return out


def test_math_shepherd_labels_are_the_fraction_of_continuations_reaching_the_gold(bundled_tokenizer, tmp_path):
    samples = _samples(3)
    replies = {"0": "good 0 + 2\ngood so 2\nThe answer is 2.",      # right all along
               "1": "good 1 + 2\nbad so 4\nThe answer is 4.",        # goes wrong at step 2
               "2": "bad 2 + 2 = 5\nThe answer is 5."}               # wrong from step 1
    gen = ScriptedGenerator(bundled_tokenizer, replies)
    examples = label_policy_rollouts(gen, samples, tmp_path, n_completions=2, n_rollouts=3, step_rule="newline",
                                     chunk=2)
    assert [e.meta["sample_id"] for e in examples] == ["q0", "q0", "q1", "q1", "q2", "q2"]
    assert [e.meta["completion_index"] for e in examples] == [0, 1] * 3
    by = {e.meta["sample_id"]: e.labels for e in examples}
    assert by["q0"] == (1.0, 1.0, 1.0) and by["q1"] == (1.0, 0.0, 0.0) and by["q2"] == (0.0, 0.0)
    # per question, what the first-error measure counts as the truth
    fe = first_error_quality([[0.9, 0.9, 0.9], [0.9, 0.2, 0.1], [0.9, 0.1]], [by["q0"], by["q1"], by["q2"]])
    assert fe["erroneous"] == 2 and fe["error_free"] == 1 and fe["accuracy_erroneous"] == 0.5 \
        and fe["accuracy_error_free"] == 1.0 and fe["f1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("fault", [KeyboardInterrupt, GenerationError("HTTP 503 from the labelling server",
                                                                     url="http://127.0.0.1:1/v1", status=503)])
def test_labelling_resumes_after_a_kill_without_redoing_finished_questions(bundled_tokenizer, tmp_path, fault):
    """A kill or a server error mid-labelling keeps the finished questions; the rerun labels only the rest."""
    samples = _samples(6)
    replies = {str(i): f"good {i} + 2\n{'good' if i % 2 else 'bad'} step\nThe answer is {i + 2 - (i % 2 == 0)}."
               for i in range(6)}

    whole = label_policy_rollouts(ScriptedGenerator(bundled_tokenizer, replies), samples, tmp_path / "whole",
                                  n_completions=1, n_rollouts=2, chunk=2)

    class Killed(ScriptedGenerator):
        def generate(self, prompts, params, progress=None):
            if len(self.calls) == 2:  # policy replies done (one call of 4 * chunk questions), one labelling chunk
                raise fault
            return super().generate(prompts, params, progress)

    killed = Killed(bundled_tokenizer, replies)
    with pytest.raises(fault if isinstance(fault, type) else type(fault)):
        label_policy_rollouts(killed, samples, tmp_path / "killed", n_completions=1, n_rollouts=2, chunk=2)
    stored = [json.loads(x)["id"] for x in (tmp_path / "killed" / STEP_LABELS_FILE).read_text().splitlines()]
    assert stored == ["q0", "q1"] and len((tmp_path / "killed" / COMPLETIONS_FILE).read_text().splitlines()) == 6
    again = ScriptedGenerator(bundled_tokenizer, replies)
    resumed = label_policy_rollouts(again, samples, tmp_path / "killed", n_completions=1, n_rollouts=2, chunk=2)
    assert again.calls == [4, 4]  # no policy call; two chunks of 2 questions x 2 step prefixes
    assert [e.to_dict() for e in resumed] == [e.to_dict() for e in whole]


@pytest.mark.parametrize("bad, message", [
    ({"n_rollouts": 0}, "n_rollouts must be >= 1"),
    ({"n_completions": 0}, "n_completions must be >= 1"),
    ({"label_chunk": 0}, "label_chunk must be >= 1"),
    ({"label_mode": "fuzzy"}, "label_mode 'fuzzy' is unknown"),
    ({"quality_questions": 4, "quality_completions": 2}, "quality_completions"),
    ({"step_rule": "re:("}, "step"),
])
def test_bad_settings_are_refused_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=message):
        PRMStageConfig(**bad)


def test_zero_rollouts_or_completions_refused_by_the_labeller(bundled_tokenizer, tmp_path):
    gen = ScriptedGenerator(bundled_tokenizer, {})
    with pytest.raises(ValueError, match="n_rollouts must be >= 1"):
        label_policy_rollouts(gen, _samples(1), tmp_path, n_rollouts=0)
    with pytest.raises(ValueError, match="n_completions must be >= 1"):
        label_policy_rollouts(gen, _samples(1), tmp_path, n_completions=0)
    with pytest.raises(ValueError, match="no questions"):
        label_policy_rollouts(gen, [], tmp_path)


def test_quality_measures_against_hand_computed_values():
    labels = [[1.0, 0.0], [0.5, 1.0], [0.0]]
    perfect = step_quality([[0.9, 0.1], [0.8, 0.7], [0.2]], labels)
    assert perfect["auc"] == 1.0 and perfect["accuracy"] == 1.0 and perfect["good_fraction"] == 0.6
    constant = step_quality([[0.5, 0.5], [0.5, 0.5], [0.5]], labels)
    assert constant["auc"] == 0.5
    # rerank picks completion 1 (higher min step score) on question 0; maj@3 votes "7"
    bok = best_of_k_quality([[[0.9, 0.1], [0.6, 0.6], [0.2]], [[0.3], [0.9], [0.5]]],
                            [[False, True, False], [False, True, False]], [["7", "8", "7"], ["1", "2", "3"]],
                            ks=[3])
    k3 = bok["k"]["3"]
    assert k3["rerank"] == 1.0 and k3["pass"] == 1.0 and k3["maj"] == pytest.approx(0.0) \
        and k3["mean"] == pytest.approx(1 / 3) and k3["weighted_maj"] == 1.0
    # weighted voting: two middling replies agreeing outweigh one confident wrong reply that rerank picks
    vote = best_of_k_quality([[[0.5], [0.5], [0.9]]], [[True, True, False]], [["4", "4", "5"]], ks=[3])["k"]["3"]
    assert vote["rerank"] == 0.0 and vote["weighted_maj"] == 1.0 and vote["maj"] == 1.0
    with pytest.raises(ValueError, match="best-of-4 needs 4 completions"):
        best_of_k_quality([[[0.1]]], [[True]], [["1"]], ks=[4])


def test_reply_auc_within_a_question_sees_what_pooled_auc_misses():
    """A scorer that knows only which question is easy: pooled reply AUC high, within a question chance."""
    scores = [[[0.9], [0.9], [0.9], [0.9]], [[0.1], [0.1], [0.1], [0.1]]]
    correct = [[True, True, True, False], [False, False, True, False]]
    easy_only = reply_quality(scores, correct)
    assert easy_only["auc"] == pytest.approx(0.75) and easy_only["within_question_auc"] == 0.5
    assert easy_only["mixed_questions"] == 2 and easy_only["replies"] == 8
    # one that orders each question's replies: within-question AUC 1; min over the steps by default
    ranked = reply_quality([[[0.9], [0.8, 0.9], [0.7], [0.9, 0.2]], [[0.1], [0.2], [0.3], []]], correct)
    assert ranked["within_question_auc"] == 1.0
    assert reply_quality([[[0.5], [0.4]]], [[True, True]])["within_question_auc"] is None  # no wrong reply
    with pytest.raises(ValueError, match="question 0: 1 scored replies for 2"):
        reply_quality([[[0.5]]], [[True, False]])


def test_stage_trains_on_the_policy_backbone_measures_quality_and_skips_on_rerun(tiny_model_dir, tmp_path,
                                                                                  monkeypatch):
    config = PRMStageConfig(model=str(tiny_model_dir), n_completions=2, n_rollouts=2, max_new_tokens=8,
                            temperature=1.0, step_rule="re:\\s+", epochs=1, batch_size=4, held_out=0.25,
                            quality_questions=3, quality_completions=4, label_chunk=2, device="cpu")
    samples, held = _samples(6), _samples(3, prefix="t")
    result = run_prm_stage(config, samples, tmp_path / "prm", policy_model=str(tiny_model_dir),
                           quality_samples=held, show_progress=False)
    assert (result.checkpoint_dir / "config.json").is_file() or any(result.checkpoint_dir.iterdir())
    assert result.labels["questions"] == 6 and result.labels["solutions"] >= 6
    q = json.loads((tmp_path / "prm" / "quality" / "quality.json").read_text())
    assert set(q["scorers"]) == {"trained", "constant"} and q["questions"] == 3
    assert q["scorers"]["constant"]["steps"]["auc"] in (0.5, None)
    assert set(q["scorers"]["trained"]["best_of_k"]["k"]) == {"4"}
    assert q["scorers"]["trained"]["replies"]["replies"] == 12
    again = run_prm_stage(config, samples, tmp_path / "prm", policy_model=str(tiny_model_dir),
                          quality_samples=held, show_progress=False)
    assert again.skipped and again.quality == result.quality
    # a record of an older version of the measures is measured again from its stored reply scores (no scoring)
    path = tmp_path / "prm" / "quality" / "quality.json"
    old = json.loads(path.read_text())
    assert len(old["reply_scores"]["trained"]) == 3 and all(len(r) == 4 for r in old["reply_scores"]["trained"])
    old["identity"]["measures"] -= 1
    del old["scorers"]["trained"]["replies"]
    path.write_text(json.dumps(old))
    monkeypatch.setattr(prm_loader, "load_scorer", lambda *a, **k: pytest.fail("a scorer was loaded to score again"))
    third = run_prm_stage(config, samples, tmp_path / "prm", policy_model=str(tiny_model_dir),
                          quality_samples=held, show_progress=False)
    assert third.quality["scorers"] == result.quality["scorers"]


def test_quality_scores_in_the_stages_precision(tiny_model_dir, tmp_path, monkeypatch):
    """A bf16 stage labels, trains and measures in bf16: the held-out scorer computes in the stage's dtype."""
    config = PRMStageConfig(model=str(tiny_model_dir), n_completions=2, n_rollouts=2, max_new_tokens=8,
                            temperature=1.0, step_rule="re:\\s+", epochs=1, batch_size=4, held_out=0,
                            quality_questions=2, quality_completions=2, device="cpu", dtype="bfloat16")
    real, seen = prm_loader.load_scorer, []

    def spy(spec, **kwargs):
        scorer = real(spec, **kwargs)
        seen.append(next(scorer.model.backbone.parameters()).dtype)
        return scorer

    monkeypatch.setattr(prm_loader, "load_scorer", spy)
    result = run_prm_stage(config, _samples(4), tmp_path / "prm", policy_model=str(tiny_model_dir),
                           quality_samples=_samples(2, prefix="t"), show_progress=False)
    assert seen == [torch.bfloat16] and result.quality["scorers"]["trained"]["replies"]["replies"] == 4


def _recipe(tmp_path, tiny_model_dir, **stages):
    recipe = {
        "name": "tiny-prm", "method": "SFT+RL(PRM)", "model": str(tiny_model_dir), "data": "arithmetic",
        "train_size": 6, "test_size": 3,
        "stages": {
            "synthesize": {"budget": 2, "rounds": [2], "max_new_tokens": 8},
            "sft": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "max_length": 256},
            "prm": {"n_completions": 2, "n_rollouts": 2, "max_new_tokens": 8, "temperature": 1.0,
                    "step_rule": "re:\\s+", "epochs": 1, "batch_size": 4, "quality_questions": 2,
                    "quality_completions": 4},
            "rl": {"estimator": "grpo", "steps": 1, "prompts_per_step": 2, "n_samples": 2, "max_new_tokens": 8,
                   "lr": 1e-3, "save_every": 1, "tensorboard": False,
                   "reward": {"prm": "stage", "alpha": 0.7, "step_rule": "re:\\s+"}},
            "eval": {"n": 2, "max_new_tokens": 8, "rerank": "prm:stage", "step_rule": "re:\\s+"},
        },
    }
    for stage, settings in stages.items():
        if settings is None:
            recipe["stages"].pop(stage)
        else:
            recipe["stages"][stage] = settings
    path = tmp_path / "tiny-prm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_run_trains_the_prm_and_rl_and_eval_use_it(tiny_model_dir, tmp_path):
    run_dir = tmp_path / "runs" / "tiny-prm"
    result = run_recipe(load_recipe(_recipe(tmp_path, tiny_model_dir)), run_dir, show_progress=False,
                        log=lambda m: None)
    data = json.loads((run_dir / "run.json").read_text())
    stages = data["cells"][0]["stages"]
    assert list(stages) == ["synthesize", "sft", "prm", "rl", "eval"]
    assert all(s["status"] == "finished" for s in stages.values())
    cell = run_dir / "arithmetic"
    rl_manifest = json.loads((cell / "rl" / "manifest.json").read_text())
    assert rl_manifest["stats"]["prm_path"] == str(cell / "prm")  # the rl reward named the stage's PRM
    assert rl_manifest["config"]["reward"]["prm"] == "local" and rl_manifest["inputs"]["prm"]  # known by its bytes
    metrics = [json.loads(x) for x in (cell / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert all("reward/process/mean" in m for m in metrics)
    eval_lines = [json.loads(x) for x in (cell / "eval" / "completions.jsonl").read_text().splitlines()]
    assert eval_lines and all("score" in s and "step_scores" in s for r in eval_lines for s in r["samples"])
    assert all(str(cell / "prm") in json.dumps(r["rerank"]) for r in eval_lines)  # reranked by the stage's PRM
    report = (run_dir / "report.md").read_text()
    assert "PRM quality" in report and "step AUC" in report
    assert result.accuracy
    # another run directory takes the finished warm-up and PRM (known by their bytes, not their paths)
    other = tmp_path / "runs" / "dense"
    run_recipe(load_recipe(_recipe(tmp_path, tiny_model_dir), ["rl.reward.dense=true"]), other,
               show_progress=False, log=lambda m: None, report=False, reuse_from=[run_dir])
    stages = {k: v["status"] for k, v in json.loads((other / "run.json").read_text())["cells"][0]["stages"].items()}
    assert stages == {"synthesize": "skipped", "sft": "skipped", "prm": "skipped", "rl": "finished",
                      "eval": "finished"}


def test_prm_from_stage_without_a_prm_stage_is_a_recipe_error(tiny_model_dir, tmp_path):
    with pytest.raises(RecipeError, match="has no prm stage"):
        load_recipe(_recipe(tmp_path, tiny_model_dir, prm=None))


def test_labelling_identity_names_shared_prefixes_only_when_on():
    """share_prefixes=False labels as openrft did before the option existed, so labellings made then still match."""
    assert "share_prefixes" not in PRMStageConfig(share_prefixes=False).label_settings()
    assert PRMStageConfig().label_settings()["share_prefixes"] is True
    assert "reply_continuations" not in PRMStageConfig().label_settings()
    assert PRMStageConfig(reply_continuations=True).label_settings()["reply_continuations"] is True
