"""Evaluation end to end: the CLI on the bundled model, resume after interruption, metrics against brute force."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from openrft.cli.main import main as cli
from openrft.data.loaders import load_bundled
from openrft.core.metrics import maj_at_k, pass_at_k
from openrft.evaluate.runner import COMPLETIONS, EvalConfig, evaluate
from openrft.core.rundir import IncompatibleRunError


@pytest.mark.slow
def test_eval_cli_prints_table_and_writes_outputs_on_bundled_model(tmp_path, capsys):
    out = tmp_path / "ev"
    rc = cli(["eval", "--data", "sciknoweval/chemical_calculation", "--limit", "3", "--n", "2",
              "--max-new-tokens", "48", "--out", str(out), "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Vanilla" in printed and "chemical_calculation" in printed and "Avg" in printed
    records = [json.loads(line) for line in (out / COMPLETIONS).read_text().splitlines()]
    assert [r["id"] for r in records] == [f"chemical_calculation/test/{i}" for i in range(3)]
    for r in records:
        assert len(r["samples"]) == 2
        for s in r["samples"]:
            assert s["text"] and 0 < s["num_tokens"] <= 48
            assert s["correct"] is False or s["extracted"] == r["gold"]
    report = json.loads((out / "report.json").read_text())[0]
    task = report["tasks"][0]
    correct = [[s["correct"] for s in r["samples"]] for r in records]
    assert task["accuracy"] == pytest.approx(sum(map(sum, correct)) / 6)
    assert (out / "report.md").read_text().count("chemical_calculation") >= 2


class Interrupting:
    """Wraps a real generator; raises KeyboardInterrupt on call number ``fail_on`` (1-based)."""

    def __init__(self, inner, fail_on=None):
        self.inner, self.fail_on, self.calls, self.prompts = inner, fail_on, 0, 0

    def generate(self, prompts, params, progress=None):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        self.prompts += len(prompts)
        return self.inner.generate(prompts, params, progress)


def test_interrupted_eval_resumes_and_matches_uninterrupted(tmp_path, tiny_generator):
    samples = load_bundled("sciknoweval/retrosynthesis")[:6]
    config = EvalConfig(n=2, temperature=1.0, max_new_tokens=6, seed=5, chunk_size=2)
    full = evaluate(tiny_generator, samples, config, tmp_path / "full", show_progress=False)

    broken = Interrupting(tiny_generator, fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(broken, samples, config, tmp_path / "resumed", show_progress=False)
    path = tmp_path / "resumed" / COMPLETIONS
    assert len(path.read_text().splitlines()) == 4
    with open(path, "a") as f:  # a torn line, as a kill -9 mid-write leaves
        f.write('{"id": "retrosynthesis/test/4", "sam')
    again = Interrupting(tiny_generator)
    resumed = evaluate(again, samples, config, tmp_path / "resumed", show_progress=False)
    assert again.prompts == 2, "only the two unfinished items are generated again"
    assert resumed.records == full.records
    assert resumed.tasks == full.tasks
    assert len(path.read_text().splitlines()) == 6


def test_rerun_with_other_settings_refuses_to_mix_outputs(tmp_path, tiny_generator):
    samples = load_bundled("sciknoweval/retrosynthesis")[:2]
    evaluate(tiny_generator, samples, EvalConfig(n=1, max_new_tokens=3), tmp_path, show_progress=False)
    with pytest.raises(IncompatibleRunError, match="other settings"):
        evaluate(tiny_generator, samples, EvalConfig(n=1, max_new_tokens=4), tmp_path, show_progress=False)


def test_greedy_config_forces_one_run():
    assert EvalConfig(n=5, temperature=0).n == 1
    with pytest.raises(ValueError, match="maj_k"):
        EvalConfig(n=2, maj_k=3)


def test_cli_bad_inputs_exit_2_with_a_clear_message(tmp_path, capsys):
    assert cli(["eval", "--model", str(tmp_path / "nope"), "--limit", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["eval", "--data", "sciknoweval/chemistry", "--limit", "1"]) == 2
    assert "chemical_calculation" in capsys.readouterr().err  # close match suggested
    assert cli(["evaluate"]) == 2
    assert "did you mean eval" in capsys.readouterr().err


def test_pass_at_k_matches_brute_force_over_subsets():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(1, 6)
        row = [rng.random() < 0.4 for _ in range(n)]
        k = rng.randint(1, n)
        subsets = list(itertools.combinations(row, k))
        assert pass_at_k([row], k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_maj_at_k_ignores_no_answer_and_uses_first_k():
    answers = [["B", None, None, "C", "C"]]
    correct = [[False, False, False, True, True]]
    assert maj_at_k(answers, correct, k=3) == 0.0  # only "B" stated among the first 3
    assert maj_at_k(answers, correct, k=5) == 1.0


def test_weights_name_follows_local_bytes(tmp_path):
    """The eval CLI and the pipeline name evaluated weights the same way: local ones with their content hash."""
    from openrft.evaluate.runner import weights_name

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"one")
    before = weights_name("smollm2-135m", adapter)
    assert before.startswith(f"smollm2-135m + {adapter} (") and weights_name("smollm2-135m") == "smollm2-135m"
    (adapter / "adapter_model.safetensors").write_bytes(b"two")
    assert weights_name("smollm2-135m", adapter) != before
    assert weights_name(str(tmp_path)).startswith(f"{tmp_path} (")  # a local full model


def test_an_evaluation_is_known_by_the_bytes_of_its_weights_not_their_path(tmp_path, tiny_generator, tiny_model_dir):
    """The same weights behind another path (a run directory named relatively, absolutely, or copied) are the same
    evaluation; an evaluation recorded under the earlier, path-bound identity is recognised and re-keyed; other
    bytes are another evaluation."""
    import shutil

    from openrft.evaluate.runner import EvaluatedWeights, weights_name

    samples, config = load_bundled("sciknoweval/retrosynthesis")[:2], EvalConfig(n=1, max_new_tokens=3)
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    evaluate(tiny_generator, samples, config, tmp_path / "a", model_name=EvaluatedWeights(str(tiny_model_dir)),
             show_progress=False)
    again = Interrupting(tiny_generator)
    result = evaluate(again, samples, config, tmp_path / "a", model_name=EvaluatedWeights(str(copy)),
                      show_progress=False)
    assert again.prompts == 0 and result.model == weights_name(str(copy))
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["config"]["model"] == "local" and manifest["inputs"]["model"]

    evaluate(tiny_generator, samples, config, tmp_path / "b", model_name=weights_name(str(tiny_model_dir)),
             show_progress=False)  # what the stage was keyed on before
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]["model"].startswith(str(tiny_model_dir))
    again = Interrupting(tiny_generator)
    evaluate(again, samples, config, tmp_path / "b", model_name=EvaluatedWeights(str(tiny_model_dir)),
             show_progress=False)
    assert again.prompts == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["config"] == manifest["config"]

    (copy / "extra.bin").write_bytes(b"new bytes")
    with pytest.raises(IncompatibleRunError, match="other settings or inputs"):
        evaluate(tiny_generator, samples, config, tmp_path / "a", model_name=EvaluatedWeights(str(copy)),
                 show_progress=False)


class KilledAfter:
    """Wraps a real generator; a kill (KeyboardInterrupt) lands once ``items`` items of a call have finished."""

    def __init__(self, inner, items=None):
        self.inner, self.items, self.prompts = inner, items, 0

    def generate(self, prompts, params, progress=None):
        raise AssertionError("evaluate saves item by item through generate_each")

    def generate_each(self, prompts, params, on_item, progress=None):
        self.prompts += len(prompts)
        finished = 0

        def each(i, outs):
            nonlocal finished
            on_item(i, outs)
            finished += 1
            if finished == self.items:
                raise KeyboardInterrupt

        return self.inner.generate_each(prompts, params, each, progress=progress)


def test_kill_mid_chunk_keeps_finished_items_and_resume_draws_the_same_samples(tmp_path, tiny_generator):
    """One chunk of 6 items, killed after 4 finished: the 4 are on disk, the rerun generates only 2, and the
    result equals an uninterrupted run (row seeds follow the prompt, not its position in the call)."""
    samples = load_bundled("sciknoweval/retrosynthesis")[:6]
    config = EvalConfig(n=2, temperature=1.0, max_new_tokens=6, seed=5)
    assert config.chunk_size >= len(samples)
    full = evaluate(tiny_generator, samples, config, tmp_path / "full", show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        evaluate(KilledAfter(tiny_generator, items=4), samples, config, tmp_path / "killed", show_progress=False)
    assert len((tmp_path / "killed" / COMPLETIONS).read_text().splitlines()) == 4
    again = KilledAfter(tiny_generator)
    resumed = evaluate(again, samples, config, tmp_path / "killed", show_progress=False)
    assert again.prompts == 2
    assert resumed.records == full.records


def test_greedy_run_decodes_greedily_in_the_sampled_pass(tmp_path, tiny_generator):
    """``greedy_run``: each item's greedy completion comes from the same generation pass as its sampled runs, is
    graded on its own (``greedy`` in the record, greedy accuracy in the metrics) and leaves the sampled metrics as
    an evaluation without it gives them; turning it on is another evaluation, turning it off keeps the old one's
    identity."""
    from openrft.evaluate.results import detail_table

    samples = load_bundled("arithmetic")[:4]
    config = EvalConfig(n=2, temperature=1.0, max_new_tokens=6, seed=5, greedy_run=True)
    both = evaluate(tiny_generator, samples, config, tmp_path / "both", show_progress=False)
    sampled = evaluate(tiny_generator, samples, EvalConfig(n=2, temperature=1.0, max_new_tokens=6, seed=5),
                       tmp_path / "sampled", show_progress=False)
    greedy = evaluate(tiny_generator, samples, EvalConfig(temperature=0.0, max_new_tokens=6, greedy_run=True),
                      tmp_path / "greedy", show_progress=False)
    assert [r["samples"] for r in both.records] == [r["samples"] for r in sampled.records]
    assert [r["greedy"] for r in both.records] == [r["samples"][0] for r in greedy.records]
    assert "greedy" not in sampled.records[0] and "greedy" not in greedy.records[0]
    t, s, g = both.tasks[0], sampled.tasks[0], greedy.tasks[0]
    assert (t.accuracy, t.per_run, t.maj_at_k, t.pass_at_k, t.mean_tokens) == \
        (s.accuracy, s.per_run, s.maj_at_k, s.pass_at_k, s.mean_tokens)
    assert t.greedy_accuracy == g.accuracy and s.greedy_accuracy is None and g.greedy_accuracy is None
    assert both.tokens == sampled.tokens + greedy.tokens
    header, rows = detail_table(both)
    assert rows[0][header.index("Greedy")] == f"{g.accuracy:.3f}"
    assert "Greedy" not in detail_table(sampled)[0]
    assert "greedy_run" not in (tmp_path / "sampled" / "manifest.json").read_text()
    with pytest.raises(IncompatibleRunError, match="other settings"):
        evaluate(tiny_generator, samples, config, tmp_path / "sampled", show_progress=False)
    again = evaluate(tiny_generator, samples, config, tmp_path / "both", show_progress=False)
    assert again.records == both.records and again.tasks == both.tasks
