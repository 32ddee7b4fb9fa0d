"""Best-of-k reranking and weighted voting: hand-computed selections with deterministic scorers, the eval
runner's scores in the JSONL (resume and re-aggregation without rescoring), and the CLI on tiny PRM/ORM checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

from openrft.cli.main import main as cli
from openrft.data.sample import Sample
from openrft.core.metrics import best_of_k, maj_at_k, rerank_at_k, weighted_maj_at_k, weighted_vote
from openrft.evaluate.results import accuracy_table, detail_table, markdown_report
from openrft.evaluate.rerank import ORMReranker, PRMReranker, Scored, check_rerank_spec
from openrft.evaluate.runner import COMPLETIONS, EvalConfig, evaluate
from openrft.models.backends.base import Completion, Generator
from openrft.rewards.prm.base import ProcessScorer

torch.set_num_threads(1)


class ContainsScorer(ProcessScorer):
    """1.0 for a step containing ``needle``, ``other`` for any other step; records every call."""

    name = "contains"

    def __init__(self, needle: str = "ok", other: float = 0.2):
        self.needle, self.other, self.calls = needle, other, []

    def score_batch(self, questions, steps):
        self.calls.append((list(questions), [list(s) for s in steps]))
        return [[1.0 if self.needle in st else self.other for st in ss] for ss in steps]


class KeywordORM:
    """An outcome scorer: 0.9 when the completion contains ``needle``, else 0.1."""

    def __init__(self, needle: str):
        self.needle, self.calls = needle, 0

    def score(self, questions, completions):
        self.calls += 1
        return [0.9 if self.needle in c else 0.1 for c in completions]


class ScriptedGenerator(Generator):
    """Returns fixed completions per question (found in the prompt's last message); counts prompts."""

    def __init__(self, script: dict[str, list[str]]):
        self.script, self.prompts, self.calls = script, 0, 0

    def generate(self, prompts, params, progress=None):
        self.calls += 1
        out = []
        for p in prompts:
            q = next(q for q in self.script if q in p[-1]["content"])
            texts = self.script[q][:params.n]
            out.append([Completion(t, num_tokens=max(1, len(t.split()))) for t in texts])
            self.prompts += 1
        return out


QA, QB = "What is 2 + 5?", "What is 3 + 3?"
SAMPLES = [Sample(id="a", task="sum", question=QA, answer="7", answer_type="numeric"),
           Sample(id="b", task="sum", question=QB, answer="6", answer_type="numeric")]
# min over steps with ContainsScorer("ok", 0.2):  a: .2 .2 1.0 -> pick 2 (right)    b: 0 .2 .2 -> tie, pick 1 (right)
# last:                                           a: .2 .2 1.0 -> pick 2 (right)    b: 0 .2 1.0 -> pick 2 (wrong)
SCRIPT = {
    QA: ["2 + 5 = 8\nThe answer is \\boxed{8}.", "2 + 5 = 8\nSo \\boxed{8}.",
         "check: 2 + 5 = 7 ok\nThe answer is \\boxed{7}. ok"],
    QB: ["", "3 + 3 = 6 ok\nSo \\boxed{6}.", "3 + 3 = 5\n\\boxed{5} ok"],
}


# ---- pure selection ---------------------------------------------------------------------


def test_best_of_k_picks_the_highest_first_on_ties_within_k():
    assert best_of_k([0.2, 0.9, 0.5]) == 1
    assert best_of_k([0.7, 0.7, 0.1]) == 0 and best_of_k([0.1, 0.7, 0.7]) == 1
    assert best_of_k([0.1, 0.2, 0.9], k=2) == 1
    assert best_of_k([0.1, 0.9], k=1) == 0  # k=1: the first completion, whatever its score
    with pytest.raises(ValueError, match="at least one"):
        best_of_k([])


def test_weighted_vote_sums_scores_per_answer():
    assert weighted_vote(["8", "8", "7"], [0.2, 0.2, 1.0]) == "7"  # plain majority would say 8
    assert weighted_vote(["8", "8", "7"], [0.6, 0.6, 1.0]) == "8"
    assert weighted_vote(["B", "A"], [0.5, 0.5]) == "B"  # tie: first stated
    assert weighted_vote([None, None], [1.0, 1.0]) is None
    assert weighted_vote(["A", None, "B"], [0.1, 1.0, 0.0], k=2) == "A"
    assert weighted_vote(["A", "B"], [0.0, 0.0]) == "A"
    with pytest.raises(ValueError, match=">= 0"):
        weighted_vote(["A"], [-0.5])
    with pytest.raises(ValueError, match="2 answers for 1 scores"):
        weighted_vote(["A", "B"], [0.5])


def test_rerank_and_weighted_majority_metrics_next_to_maj():
    answers = [["8", "8", "7"], [None, "6", "5"]]
    correct = [[False, False, True], [False, True, False]]
    scores = [[0.2, 0.2, 1.0], [0.0, 0.2, 1.0]]
    assert maj_at_k(answers, correct, 3) == 0.5
    assert rerank_at_k(scores, correct, 3) == 0.5  # b picks "5"
    assert weighted_maj_at_k(answers, scores, correct, 3) == 0.5
    assert rerank_at_k(scores, correct, 2) == 0.5  # a: tie of the first two -> index 0 ("8"); b: index 1 ("6")
    assert weighted_maj_at_k(answers, scores, correct, 2) == 0.5  # a: "8"; b: "6" (right)
    assert rerank_at_k(scores, correct, 1) == 0.0 == sum(r[0] for r in correct) / 2  # k=1: run-0 accuracy


def test_check_rerank_spec():
    assert check_rerank_spec("prm:judge:smollm2-135m") == ("prm", "judge:smollm2-135m")
    assert check_rerank_spec("orm: runs/orm ") == ("orm", "runs/orm")
    for bad in ("runs/prm", "prm:", "rm:x", ""):
        with pytest.raises(ValueError, match="prm:<checkpoint"):
            check_rerank_spec(bad)
    with pytest.raises(ValueError, match="rerank spec"):
        EvalConfig(rerank="x")
    with pytest.raises(ValueError, match="unknown step aggregator"):
        EvalConfig(rerank_agg="max")
    with pytest.raises(ValueError, match="unknown step rule"):
        EvalConfig(step_rule="sentences")
    with pytest.raises(ValueError, match="rerank_k"):
        EvalConfig(n=2, rerank_k=3)


# ---- rerankers ----------------------------------------------------------------------------


@pytest.mark.parametrize(("agg", "expected"), [("min", 0.5), ("mean", 2.5 / 3), ("last", 1.0), ("product", 0.5)])
def test_prm_reranker_aggregates_step_scores(agg, expected):
    rr = PRMReranker(ContainsScorer("ok", other=0.5), step_rule="newline", agg=agg)
    [[got]] = rr.score(["Q"], [["ok a\nbad\n\nok b"]])
    assert got == Scored(pytest.approx(expected), (1.0, 0.5, 1.0))


def test_prm_reranker_batches_all_items_and_skips_empty_completions():
    scorer = ContainsScorer("ok")
    rr = PRMReranker(scorer, step_rule="newline", agg="min", spec="prm:contains")
    got = rr.score(["q1", "q2"], [["a ok\nb", "", "  \n \n"], ["x ok"]])
    assert len(scorer.calls) == 1, "one scorer call for every item"
    questions, steps = scorer.calls[0]
    assert questions == ["q1", "q2"] and steps == [["a ok", "b"], ["x ok"]]  # no-step completions are not sent
    assert got == [[Scored(0.2, (1.0, 0.2)), Scored(0.0, ()), Scored(0.0, ())], [Scored(1.0, (1.0,))]]
    assert best_of_k([s.score for s in got[0][1:]]) == 0  # only empty completions: the earliest
    assert rr.identity() == {"spec": "prm:contains", "step_rule": "newline"}
    assert PRMReranker(scorer, step_rule="step_k").score(["q"], [["Step 1: ok. Step 2: no"]])[0][0].steps == (1.0,)


def test_prm_reranker_rejects_bad_scorer_output():
    class Wrong(ContainsScorer):
        def score_batch(self, questions, steps):
            return [[1.5 for _ in s] for s in steps]

    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        PRMReranker(Wrong()).score(["q"], [["a"]])
    with pytest.raises(TypeError, match="list of item i's completions"):
        PRMReranker(ContainsScorer()).score(["q"], ["a completion"])


def test_orm_reranker_scores_whole_completions():
    orm = KeywordORM("\\boxed{7}")
    rr = ORMReranker(orm, spec="orm:keyword")
    got = rr.score([QA, QB], [SCRIPT[QA], SCRIPT[QB]])
    assert orm.calls == 1
    assert [[s.score for s in g] for g in got] == [[0.1, 0.1, 0.9], [0.1, 0.1, 0.1]]
    assert got[0][0].steps is None
    with pytest.raises(TypeError, match="no score"):
        ORMReranker(object())

    class Short(KeywordORM):
        def score(self, questions, completions):
            return [0.5]

    with pytest.raises(ValueError, match="1 scores for 2 completions"):
        ORMReranker(Short("x")).score(["q"], [["a", "b"]])


# ---- the eval runner ------------------------------------------------------------------------


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_evaluate_with_prm_reranker_reports_and_saves_scores(tmp_path):
    scorer = ContainsScorer("ok")
    gen = ScriptedGenerator(SCRIPT)
    config = EvalConfig(n=3, temperature=1.0, max_new_tokens=16)
    res = evaluate(gen, SAMPLES, config, tmp_path, show_progress=False,
                   reranker=PRMReranker(scorer, agg="min", spec="prm:contains"))
    [t] = res.tasks
    assert t.accuracy == pytest.approx(1 / 3) and t.maj_at_k == 0.5
    assert (t.rerank_at_k, t.weighted_maj_at_k, t.rerank_k) == (1.0, 1.0, 3)
    assert len(scorer.calls) == 1 and scorer.calls[0][0] == [QA] * 3 + [QB] * 2  # b's empty completion not sent
    recs = _lines(tmp_path / COMPLETIONS)
    assert recs[0]["rerank"] == {"spec": "prm:contains", "step_rule": "newline", "agg": "min"}
    assert [s["score"] for s in recs[0]["samples"]] == [0.2, 0.2, 1.0]
    assert [s["step_scores"] for s in recs[1]["samples"]] == [[], [1.0, 0.2], [0.2, 1.0]]
    assert res.config["rerank"] == "prm:contains" and res.rerank_average == 1.0
    header, rows = detail_table(res)
    assert header[5:7] == ["rerank@3", "weighted_maj@3"] and rows[0][5:7] == ["1.000", "1.000"]
    header, rows = accuracy_table([res])
    assert [r[0] for r in rows] == ["Vanilla", "Vanilla rerank@3"] and rows[1][1:] == ["1.000 *", "1.000 *"]
    assert "reranked by prm:contains (steps: newline, agg: min)" in markdown_report([res])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert "rerank" not in manifest["config"] and manifest["stats"]["rerank"] == "prm:contains"


def test_no_rerank_leaves_tables_and_records_as_before(tmp_path):
    res = evaluate(ScriptedGenerator(SCRIPT), SAMPLES, EvalConfig(n=3, temperature=1.0), tmp_path, show_progress=False)
    assert res.tasks[0].rerank_at_k is None and res.rerank_average is None
    assert "rerank@3" not in detail_table(res)[0] and len(accuracy_table([res])[1]) == 1
    assert all("score" not in s and "rerank" not in r for r in _lines(tmp_path / COMPLETIONS) for s in r["samples"])


class Interrupting(ScriptedGenerator):
    def __init__(self, script, fail_on):
        super().__init__(script)
        self.fail_on = fail_on

    def generate(self, prompts, params, progress=None):
        if self.calls + 1 == self.fail_on:
            self.calls += 1
            raise KeyboardInterrupt
        return super().generate(prompts, params, progress)


def test_resumed_eval_does_not_rescore_finished_items(tmp_path):
    config = EvalConfig(n=3, temperature=1.0, chunk_size=1)
    scorer = ContainsScorer("ok")
    with pytest.raises(KeyboardInterrupt):
        evaluate(Interrupting(SCRIPT, fail_on=2), SAMPLES, config, tmp_path, show_progress=False,
                 reranker=PRMReranker(scorer, spec="prm:contains"))
    # the item is saved when generated, then again once its chunk is scored (the last line of an id wins)
    saved = _lines(tmp_path / COMPLETIONS)
    assert len(scorer.calls) == 1 and {r["id"] for r in saved} == {SAMPLES[0].id} and "rerank" in saved[-1]
    scorer2 = ContainsScorer("ok")
    gen = ScriptedGenerator(SCRIPT)
    res = evaluate(gen, SAMPLES, config, tmp_path, show_progress=False,
                   reranker=PRMReranker(scorer2, spec="prm:contains"))
    assert gen.prompts == 1 and len(scorer2.calls) == 1 and scorer2.calls[0][0] == [QB, QB]
    assert res.tasks[0].rerank_at_k == 1.0


def test_adding_or_changing_rerank_on_a_finished_eval_scores_only_what_is_needed(tmp_path):
    config = EvalConfig(n=3, temperature=1.0)
    evaluate(ScriptedGenerator(SCRIPT), SAMPLES, config, tmp_path, show_progress=False)

    gen, scorer = ScriptedGenerator(SCRIPT), ContainsScorer("ok")
    res = evaluate(gen, SAMPLES, config, tmp_path, show_progress=False, reranker=PRMReranker(scorer, spec="prm:c"))
    assert gen.calls == 0 and len(scorer.calls) == 1, "completions reused, scored once"
    assert res.tasks[0].rerank_at_k == 1.0
    assert all(r["rerank"]["agg"] == "min" for r in _lines(tmp_path / COMPLETIONS))

    # another aggregator: recomputed from the stored step scores, no scorer call
    scorer = ContainsScorer("ok")
    res = evaluate(gen, SAMPLES, config, tmp_path, show_progress=False,
                   reranker=PRMReranker(scorer, agg="last", spec="prm:c"))
    assert scorer.calls == [] and gen.calls == 0
    assert (res.tasks[0].rerank_at_k, res.tasks[0].weighted_maj_at_k) == (0.5, 0.5)  # b picks "5"
    assert [s["score"] for s in _lines(tmp_path / COMPLETIONS)[1]["samples"]] == [0.0, 0.2, 1.0]

    # another step rule or scorer: rescored
    scorer = ContainsScorer("ok")
    evaluate(gen, SAMPLES, config, tmp_path, show_progress=False,
             reranker=PRMReranker(scorer, step_rule="blank_line", agg="last", spec="prm:c"))
    assert len(scorer.calls) == 1 and scorer.calls[0][1][0] == [SCRIPT[QA][0]]  # whole completion as one step
    orm = KeywordORM("\\boxed{7}")
    res = evaluate(gen, SAMPLES, config, tmp_path, show_progress=False, reranker=ORMReranker(orm, spec="orm:kw"))
    assert orm.calls == 1 and res.tasks[0].rerank_at_k == 0.5  # b: all 0.1 -> the empty first completion
    assert _lines(tmp_path / COMPLETIONS)[0]["rerank"] == {"spec": "orm:kw", "step_rule": None, "agg": None}


# ---- the CLI on tiny checkpoints ----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoints(tiny_model_dir, tmp_path_factory):
    from openrft.models.loading import load_model
    from openrft.rewards.orm import OutcomeRewardModel
    from openrft.rewards.prm.value_head import ValueHeadModel, ValueHeadPRM

    root = tmp_path_factory.mktemp("rerankers")
    model, tok = load_model(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    prm = ValueHeadPRM(ValueHeadModel(model, base_model=str(tiny_model_dir)), tok).save_pretrained(root / "prm")
    model, tok = load_model(str(tiny_model_dir), device="cpu")
    torch.manual_seed(1)
    orm = OutcomeRewardModel(ValueHeadModel(model, base_model=str(tiny_model_dir)), tok).save_pretrained(root / "orm")
    return {"prm": prm, "orm": orm}


@pytest.mark.parametrize("kind", ["prm", "orm"])
def test_eval_cli_reranks_with_a_tiny_checkpoint(kind, tiny_checkpoints, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["eval", "--model", str(tiny_model_dir), "--data", "arithmetic", "--limit", "3", "--n", "3",
            "--temperature", "1.0", "--max-new-tokens", "12", "--rerank", f"{kind}:{tiny_checkpoints[kind]}",
            "--rerank-agg", "mean", "--out", str(out), "--quiet"]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "rerank@3" in printed and "weighted_maj@3" in printed
    records = _lines(out / COMPLETIONS)
    assert len(records) == 3
    for r in records:
        assert r["rerank"]["spec"] == f"{kind}:{tiny_checkpoints[kind]}"
        for s in r["samples"]:
            assert 0.0 <= s["score"] <= 1.0
            if kind == "prm":
                assert len(s["step_scores"]) == len([x for x in s["text"].split("\n") if x.strip()])
    task = json.loads((out / "report.json").read_text())[0]["tasks"][0]
    scores = [[s["score"] for s in r["samples"]] for r in records]
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    assert task["rerank_at_k"] == pytest.approx(rerank_at_k(scores, correct, 3))
    before = (out / COMPLETIONS).stat()
    assert cli(argv) == 0  # a finished run: nothing regenerated, nothing rescored (rescoring rewrites the file)
    after = (out / COMPLETIONS).stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)


def test_eval_cli_bad_rerank_specs_exit_2(tmp_path, capsys):
    assert cli(["eval", "--data", "arithmetic", "--limit", "1", "--rerank", "runs/prm"]) == 2
    assert "prm:<checkpoint" in capsys.readouterr().err
    assert cli(["eval", "--data", "arithmetic", "--limit", "1", "--rerank", f"prm:{tmp_path / 'missing'}"]) == 2
    assert "missing" in capsys.readouterr().err
