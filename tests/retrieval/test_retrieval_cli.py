"""--icl-k in the stage CLIs gives the prompts the library hook gives (the layout 'openrft run' uses)."""

from __future__ import annotations

import json

from openrft.cli.main import main


def test_eval_cli_icl_prompts_match_the_library_hook(tiny_model_dir, tiny_generator, tmp_path, capsys):
    from openrft.data.loaders import load_sources
    from openrft.evaluate.runner import EvalConfig, evaluate
    from openrft.retrieval.fewshot import make_examples_for

    base = ["eval", "--model", str(tiny_model_dir), "--data", "arithmetic", "--limit", "2", "--n", "1",
            "--max-new-tokens", "4", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "plain")]) == 0
    assert main(base + ["--out", str(tmp_path / "icl"), "--icl-k", "2", "--icl-index", str(tmp_path / "index")]) == 0
    plain = json.loads((tmp_path / "plain" / "manifest.json").read_text())["inputs"]["prompts"]
    icl = json.loads((tmp_path / "icl" / "manifest.json").read_text())["inputs"]["prompts"]
    assert plain != icl and (tmp_path / "index" / "index.faiss").is_file()

    examples_for = make_examples_for(load_sources(["arithmetic"], split="train"), 2)
    test = load_sources(["arithmetic"], split="test", limit_per_task=2)
    evaluate(tiny_generator, test, EvalConfig(n=1, max_new_tokens=4), tmp_path / "lib", examples_for=examples_for,
             show_progress=False)
    assert json.loads((tmp_path / "lib" / "manifest.json").read_text())["inputs"]["prompts"] == icl
    capsys.readouterr()
    data_file = tmp_path / "test.jsonl"
    data_file.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in test))
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(data_file), "--icl-k", "2",
                 "--out", str(tmp_path / "f")]) == 2
    assert "name the training data to retrieve examples from with --icl-train" in capsys.readouterr().err


def test_icl_traces_flag_gives_the_pipelines_worked_shots(tiny_model_dir, tiny_generator, tmp_path, capsys):
    """SciKnowEval ships no worked solutions: --icl-traces makes the shots show synthesized traces, as the
    pipeline's stages after synthesis do; the prompts equal the library hook's with_traces."""
    from openrft.data.loaders import load_sources
    from openrft.evaluate.runner import EvalConfig, evaluate
    from openrft.retrieval.fewshot import make_examples_for
    from openrft.synthesize.stage import verified_traces

    data = "sciknoweval/chemical_calculation"
    train = load_sources([data], split="train")
    records = [{"id": s.id, "task": s.task, "sample": s.to_dict(), "fallback": False,
                "traces": [{"text": f"Worked out step by step. The answer is \\boxed{{{s.answer}}}."}]} for s in train]
    (tmp_path / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    base = ["eval", "--model", str(tiny_model_dir), "--data", data, "--limit", "2", "--n", "1", "--max-new-tokens",
            "4", "--quiet", "--icl-k", "2", "--icl-index", str(tmp_path / "index")]
    assert main(base + ["--out", str(tmp_path / "bare")]) == 0
    assert main(base + ["--out", str(tmp_path / "worked"), "--icl-traces", str(tmp_path / "traces.jsonl")]) == 0
    prompts = {name: json.loads((tmp_path / name / "manifest.json").read_text())["inputs"]["prompts"]
               for name in ("bare", "worked")}
    assert prompts["bare"] != prompts["worked"]
    hook = make_examples_for(train, 2).with_traces(verified_traces(tmp_path))
    evaluate(tiny_generator, load_sources([data], split="test", limit_per_task=2), EvalConfig(n=1, max_new_tokens=4),
             tmp_path / "lib", examples_for=hook, show_progress=False)
    assert json.loads((tmp_path / "lib" / "manifest.json").read_text())["inputs"]["prompts"] == prompts["worked"]
    capsys.readouterr()
