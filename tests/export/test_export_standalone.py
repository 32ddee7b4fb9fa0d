"""An export runs where the engine runs: the reward module and the grading package it carries import only the standard
library (checked in a Python started with ``-I -S``: no site-packages, no openrft), grade exactly as openrft does on
real bundled samples (MCQ, numeric, P-CoT programs run in the sandbox), and are openrft's own source files."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from openrft.data import Sample, load_sources
from openrft.export import ExportConfig, export_openrlhf, export_verl
from openrft.export.bundle import SRC, bundle_files
from openrft.tasks import task_for

# runs in `python -I -S`: loads the reward module the way verl and OpenRLHF do (a spec from its path), grades the
# cases on stdin, and reports what was imported
STANDALONE = r"""
import importlib.util, json, sys
path, engine = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("custom_module", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
cases = json.load(sys.stdin)
if engine == "verl":
    out = [module.compute_score(c["data_source"], c["text"], c["ground_truth"], extra_info=c["extra_info"])
           for c in cases]
else:
    reward = module.reward()
    decode = sys.modules[type(reward).__module__].decode_sample
    out = reward.score([decode(c["label"]) for c in cases], [c["text"] for c in cases])
outside = sorted({m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names) - {"__main__", "custom_module"})
print(json.dumps({"results": out, "outside_stdlib": outside, "no_site": sys.flags.no_site,
                  "isolated": sys.flags.isolated, "path": sys.path}))
"""


def _replies(sample: Sample) -> dict[str, str]:
    """A right reply, a wrong one and one without an answer, in the sample's own answer format."""
    gold = task_for(sample).render_answer(sample)
    if sample.answer_type == "mcq":
        other = next(label for label in sample.labels if label != sample.answer)
        wrong = gold.replace(f"{{{sample.answer}}}", f"{{{other}}}")
    elif sample.answer_type == "program":
        wrong = "```python\ndef solution():\n    return " + f"{float(sample.answer) + 7}\n```"
    elif sample.answer_type == "text":
        wrong = "The answer is \\boxed{nitrogen}."
    else:
        wrong = re.sub(r"\\boxed\{([^}]*)\}", lambda m: "\\boxed{" + str(float(m.group(1)) + 7) + "}", gold)
    return {"gold": gold, "wrong": wrong, "none": "I cannot tell from what is given."}


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    """Real bundled samples: SciKnowEval MCQ of all eight tasks, numeric GSM8K/SVAMP/arithmetic, GSM8K as P-CoT
    programs; plus two free-text answers (no bundled set has them)."""
    text = [Sample(id=f"t{i}", task="text", question=q, answer=a, answer_type="text")
            for i, (q, a) in enumerate([("Which gas do plants take up?", "carbon dioxide"),
                                        ("Name the noble gas with atomic number 2.", "helium")])]
    return [*load_sources(["sciknoweval/all"], split="test", limit_per_task=2),
            *load_sources(["gsm8k", "svamp", "arithmetic"], split="test", limit_per_task=3),
            *load_sources(["gsm8k"], split="test", limit_per_task=4, answer_type="program"), *text]


def _standalone(reward_file: Path, engine: str, cases: list[dict]) -> dict:
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", STANDALONE, str(reward_file), engine],
                          input=json.dumps(cases), capture_output=True, text=True, timeout=600, cwd=reward_file.parent)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["no_site"] and report["isolated"] and report["outside_stdlib"] == [
        next(p.name for p in reward_file.parent.glob("openrft_grading_*"))]
    assert not any("site-packages" in p for p in report["path"])
    return report


def test_verl_reward_grades_as_openrft_with_the_standard_library_only(tmp_path, samples):
    result = export_verl(ExportConfig(data=["mixed"], test_split=None), tmp_path / "verl", splits={"train": samples})
    rows = pd.read_parquet(result.files["train"]).to_dict("records")
    cases, expected = [], []
    for row, sample in zip(rows, samples, strict=True):
        for text in _replies(sample).values():
            extra = {k: (int(v) if k == "index" else v) for k, v in row["extra_info"].items()}
            cases.append({"data_source": row["data_source"], "ground_truth": row["reward_model"]["ground_truth"],
                          "extra_info": extra, "text": text})
            grade = task_for(sample).grade(text, sample)
            expected.append({"score": grade.score, "outcome": grade.score, "correct": float(grade.correct),
                             "has_answer": float(grade.extracted is not None), "acc": float(grade.correct)})
    got = _standalone(result.files["reward"], "verl", cases)["results"]
    assert got == expected
    scores = [g["score"] for g in got]
    assert scores[0::3] == [1.0] * len(samples) and scores[1::3] == [0.0] * len(samples)  # every gold right, wrong wrong
    assert {s.answer_type for s in samples} == {"mcq", "numeric", "program", "text"} and len(cases) >= 60


def test_openrlhf_reward_grades_as_openrft_with_the_standard_library_only(tmp_path, samples):
    result = export_openrlhf(ExportConfig(data=["mixed"], test_split=None, partial_credit=0.1), tmp_path / "rlhf",
                             splits={"train": samples})
    labels = [json.loads(line)["label"] for line in result.files["train"].read_text().splitlines()]
    cases, expected = [], []
    for label, sample in zip(labels, samples, strict=True):
        for text in _replies(sample).values():
            cases.append({"label": label, "text": text})
            grade = task_for(sample).grade(text, sample)
            expected.append(1.0 if grade.correct else 0.1 if grade.extracted is not None else 0.0)
    got = _standalone(result.files["reward"], "openrlhf", cases)["results"]
    assert [g["score"] for g in got] == expected and 0.1 in expected


def test_a_pickled_reward_function_finds_its_package_in_a_fresh_process(tmp_path, load_reward_module):
    """verl and OpenRLHF may ship the function to Ray workers with cloudpickle: the worker has no openrft and has
    not imported the module; the function imports the package from the export folder itself."""
    cloudpickle = pytest.importorskip("cloudpickle")
    result = export_verl(ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=1), tmp_path / "p")
    module = load_reward_module(result.files["reward"])
    row = pd.read_parquet(result.files["train"]).to_dict("records")[0]
    sample = load_sources(["gsm8k"], split="test", limit_per_task=1)[0]
    extra = {k: (int(v) if k == "index" else v) for k, v in row["extra_info"].items()}
    args = (row["data_source"], task_for(sample).render_answer(sample), sample.answer, extra)
    (tmp_path / "fn.pkl").write_bytes(cloudpickle.dumps(module.compute_score))
    worker = ("import pickle, sys; fn = pickle.loads(open(sys.argv[1], 'rb').read()); "
              "print(fn(*pickle.loads(open(sys.argv[2], 'rb').read()))['score'], "
              "any(m.split('.')[0] == 'openrft' for m in sys.modules))")
    (tmp_path / "args.pkl").write_bytes(cloudpickle.dumps(args))
    proc = subprocess.run([sys.executable, "-I", "-c", worker, str(tmp_path / "fn.pkl"), str(tmp_path / "args.pkl")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1.0", "False"]


def test_the_bundle_is_openrfts_own_source_importing_only_the_standard_library(tmp_path):
    result = export_verl(ExportConfig(data=["arithmetic"], limit=2, test_split=None), tmp_path / "b")
    package = next(p for p in result.out_dir.iterdir() if p.name.startswith("openrft_grading_"))
    files = bundle_files()
    assert {"tasks/program.py", "tasks/sandbox_child.py", "tasks/mcq.py", "export/runtime.py",
            "export/prm_client.py"} <= set(files)
    assert not any(f.startswith(("models/", "retrieval/", "rl/")) or f == "rewards/prm/loader.py" for f in files)
    for rel in files:
        copied = (package / rel).read_text(encoding="utf-8")
        assert copied.replace(package.name, "openrft") == (SRC / rel).read_text(encoding="utf-8"), rel
        for node in ast.walk(ast.parse(copied)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in (package.name, "sandbox_seccomp") or \
                    (rel, name) in {("rewards/base.py", f"{package.name}.rewards.prm.loader"),
                                    ("export/runtime.py", "torch")}, (rel, name)
    manifest = json.loads(result.files["manifest"].read_text())
    assert f"{package.name}/tasks/sandbox.py" in {e["path"] for e in manifest["files"].values()}
    readme = result.files["readme"].read_text()
    assert "pip install" not in readme and "standard library" in readme


def test_overwriting_replaces_the_bundle_of_an_earlier_export(tmp_path):
    out = tmp_path / "again"
    export_verl(ExportConfig(data=["arithmetic"], limit=2, test_split=None), out)
    stale = out / "openrft_grading_0000000000" / "tasks"
    stale.mkdir(parents=True)
    (stale / "old.py").write_text("# an earlier export's file\n")
    manifest = json.loads((out / "openrft_export.json").read_text())
    manifest["files"]["old"] = {"path": "openrft_grading_0000000000/tasks/old.py", "sha256": ""}
    (out / "openrft_export.json").write_text(json.dumps(manifest))
    (out / "mine.txt").write_text("kept")
    export_verl(ExportConfig(data=["arithmetic"], limit=2, test_split=None, overwrite=True), out)
    assert not (out / "openrft_grading_0000000000").exists() and (out / "mine.txt").read_text() == "kept"


def test_a_remote_prm_is_scored_through_the_standard_library(tmp_path, prm_server):
    from openrft.rewards.combine import combine
    from openrft.rewards.steps import split_steps

    url, scorer = prm_server
    samples = load_sources(["gsm8k"], split="test", limit_per_task=3)
    result = export_verl(ExportConfig(data=["gsm8k"], split="test", test_split=None, limit=3, prm_url=url,
                                      alpha=0.6, agg="min", score_answer_step=False), tmp_path / "prm")
    rows = pd.read_parquet(result.files["train"]).to_dict("records")
    cases, expected = [], []
    for row, sample in zip(rows, samples, strict=True):
        for text in _replies(sample).values():
            extra = {k: (int(v) if k == "index" else v) for k, v in row["extra_info"].items()}
            cases.append({"data_source": row["data_source"], "ground_truth": sample.answer, "extra_info": extra,
                          "text": text})
            steps = [st.text for st in split_steps(text, "newline")]
            steps = steps[:-1] if len(steps) > 1 else steps  # score_answer_step=False: the answer line is the outcome's
            expected.append(combine(task_for(sample).grade(text, sample).score,
                                    scorer.score(sample.question, steps) if steps else [], alpha=0.6, agg="min"))
    got = _standalone(result.files["reward"], "verl", cases)["results"]
    assert [g["score"] for g in got] == pytest.approx(expected)
    assert all("process" in g for g in got) and 0.6 < got[0]["score"] < 1.0
