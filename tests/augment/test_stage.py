"""The augment stage: scripted rewriters/teachers for exact behaviour, the tiny real model (directly and
served over HTTP) for robustness, interruption and endpoint failure for resume."""

from __future__ import annotations

import json
import re
import time

import pytest

from openrft.augment.shuffle import check_remap
from openrft.augment.stage import AUGMENTED, REWRITES, AugmentConfig, run_augment
from openrft.data.loaders import load_bundled
from openrft.data.loaders import load_samples
from openrft.data.sample import Sample
from openrft.models.backends.base import Completion, Generator
from openrft.models.backends.openai_http import GenerationError, OpenAIGenerator
from openrft.core.rundir import Manifest
from openrft.serve import make_server

Q1 = Sample(id="q1", task="chem", question="What is the molar mass of H2O in g/mol?",
            choices=("18", "16", "20", "2"), answer="A", answer_type="mcq")
Q2 = Sample(id="q2", task="chem", question="How many moles are in 36 g of H2O?",
            choices=("1", "2", "3", "4"), answer="B", answer_type="mcq")
Q3 = Sample(id="q3", task="chem", question="Which gas is produced when Zn reacts with HCl?",
            choices=("O2", "H2", "Cl2", "N2"), answer="B", answer_type="mcq")
Q4 = Sample(id="q4", task="gsm8k", question="Tom has 3 apples and buys 4 more. How many apples does he have?",
            answer="7", answer_type="numeric")
GOOD = {
    "q1": ["Find the molar mass of H2O, in g/mol.", "In g/mol, how large is the molar mass of H2O?",
           "Determine the molar mass of H2O expressed in g/mol.", "Give H2O's molar mass in units of g/mol."],
    "q2": ["Find the number of moles in 36 g of H2O.", "A sample of 36 g of H2O holds how many moles?"],
    "q4": ["After buying 4 more apples, Tom, who had 3, has how many apples?",
           "Tom had 3 apples and then bought 4 additional ones. What is his total number of apples?"],
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny model decodes faster on one thread than on two contended ones (shared CI machines); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def question_of(prompt) -> str:
    return re.split(r"(?:Question|Paragraph):\n", prompt[-1]["content"])[-1]


class Scripted(Generator):
    """A rewriter whose reply is ``reply(sample id, attempt)``; records every prompt it gets."""

    name = "scripted"
    model = "fake"

    def __init__(self, reply):
        self.reply, self.prompts, self.calls = reply, [], 0

    def generate(self, prompts, params, progress=None):
        self.calls += 1
        out = []
        for p in prompts:
            self.prompts.append(p)
            sid = next(s.id for s in (Q1, Q2, Q3, Q4) if question_of(p).startswith(s.question))
            attempt = sum(1 for q in self.prompts if question_of(q).startswith(question_of(p)[:30])) - 1
            out.append([Completion(self.reply(sid, attempt), 7)])
        return out


def scripted_reply(sid, attempt):
    if sid == "q1":  # a list with a preamble, a duplicate, a lossy variant and one variant too many
        v = GOOD["q1"]
        return (f"Here are the versions:\n1. {v[0]}\n2. What is the molar mass of H2O in g/mol ?\n3. {v[1]}\n"
                f"4. What is the molar mass of water?\n5. {v[2]}\n6. {v[3]}")
    if sid == "q2":  # empty first, then one variant per re-ask
        return "" if attempt == 0 else GOOD["q2"][attempt - 1]
    if sid == "q3":  # never usable
        return "   "
    return " <sep> ".join(GOOD["q4"])


def test_scripted_rewriter_kept_dropped_retried_and_provenance(tmp_path):
    gen = Scripted(scripted_reply)
    config = AugmentConfig(k=3, expansion=4, retries=2, seed=3, temperature=0.0, batch_size=2)
    res = run_augment([Q1, Q2, Q3, Q4], gen, config, tmp_path, show_progress=False)
    by_id = {s.id: s for s in res.samples}
    assert [s.id for s in res.samples] == ["q1", "q1#aug1", "q1#aug2", "q1#aug3", "q2", "q2#aug1", "q2#aug2",
                                           "q3", "q4", "q4#aug1", "q4#aug2"]
    for i, text in enumerate(GOOD["q1"][:3], 1):
        s = by_id[f"q1#aug{i}"]
        assert s.question == text and s.task == "chem"
        assert {k: s.meta[k] for k in ("parent_id", "method", "variant", "generator")} == \
            {"parent_id": "q1", "method": "rewrite+shuffle", "variant": i, "generator": "scripted:fake"}
        assert check_remap(Q1.replace(question=text), s) == []
    assert by_id["q1"].question == Q1.question and by_id["q1"].meta["method"] == "shuffle"
    assert check_remap(Q1, by_id["q1"]) == []
    assert by_id["q3"].meta["method"] == "shuffle" and check_remap(Q3, by_id["q3"]) == []  # only its original
    assert [by_id[i].meta["method"] for i in ("q4", "q4#aug1")] == ["original", "rewrite"]  # numeric: no shuffle
    assert by_id["q4#aug1"].choices is None and by_id["q4#aug1"].answer == "7"

    recs = {r["id"]: r for r in map(json.loads, (tmp_path / REWRITES).read_text().splitlines())}
    v1 = recs["q1"]["variants"]
    assert [(v["kept"], v["reason"]) for v in v1] == [(True, None), (False, "duplicate_original"), (True, None),
                                                       (False, "lost_tokens"), (True, None), (False, "surplus")]
    assert "formula:H2O" in v1[3]["detail"] and recs["q1"]["status"] == "ok" and len(recs["q1"]["attempts"]) == 1
    assert [a["error"] for a in recs["q2"]["attempts"]] == ["empty_reply", None, None]
    assert recs["q2"]["status"] == "partial" and recs["q2"]["kept"] == GOOD["q2"]
    assert recs["q3"]["status"] == "failed" and len(recs["q3"]["attempts"]) == 3  # retried to the budget
    retry = [p for p in gen.prompts if question_of(p) == Q2.question][2][-1]["content"]
    assert GOOD["q2"][0] in retry and "2 new ones" in retry  # a re-ask lists what exists and asks for the rest

    stats = Manifest.load(tmp_path).stats
    assert stats["samples_in"] == 4 and stats["samples_out"] == 11
    # q4 gets the same two variants on each of its 3 asks: the repeats are duplicates of kept ones
    assert [v["reason"] for v in recs["q4"]["variants"]] == [None, None] + ["duplicate_variant"] * 4
    assert stats["variants_parsed"] == 14 and stats["variants_kept"] == 7
    assert stats["reasons"] == {"duplicate_variant": 4, "duplicate_original": 1, "lost_tokens": 1, "surplus": 1}
    assert stats["reply_errors"] == {"empty_reply": 4} and stats["questions_without_variant"] == 1
    assert stats["not_shuffled"] == {"not_mcq": 1} and stats["kept_fraction"] == 0.5
    assert load_samples(tmp_path / AUGMENTED) == res.samples

    calls = gen.calls
    again = run_augment([Q1, Q2, Q3, Q4], gen, config, tmp_path, show_progress=False)
    assert gen.calls == calls and again.samples == res.samples  # finished: nothing is asked again
    reshuffled = run_augment([Q1, Q2, Q3, Q4], gen, AugmentConfig(**{**config.__dict__, "seed": 3,
                                                                     "balance_gold": True}), tmp_path,
                             show_progress=False)
    assert gen.calls == calls and [s.question for s in reshuffled.samples] == [s.question for s in res.samples]


def test_teacher_check_drops_variants_the_teacher_gets_wrong(tmp_path):
    class Teacher(Generator):
        name, model, seen = "teacher", "t", []

        def generate(self, prompts, params, progress=None):
            out = []
            for p in prompts:
                text = p[-1]["content"]
                self.seen.append(text)
                right = "Determine" in text or "In g/mol" in text
                out.append([Completion("The answer is \\boxed{A}." if right else "It is \\boxed{C}." if "Find"
                                       in text else "no idea", 5)])
            return out

    teacher = Teacher()
    config = AugmentConfig(k=3, expansion=4, retries=0, teacher_check=True)
    res = run_augment([Q1], Scripted(scripted_reply), config, tmp_path, teacher=teacher, show_progress=False)
    assert all("A. 18\nB. 16\nC. 20\nD. 2" in t for t in teacher.seen)  # the original options, in their order
    assert len(teacher.seen) == 3  # only the variants that passed the rules, up to k
    assert [s.question for s in res.samples] == [Q1.question, GOOD["q1"][1], GOOD["q1"][2]]
    rec = res.records["q1"]
    wrong = [v for v in rec["variants"] if v["reason"] == "teacher_wrong"]
    assert [v["text"] for v in wrong] == [GOOD["q1"][0]] and "'C'" in wrong[0]["detail"]
    assert res.stats["reasons"]["teacher_wrong"] == 1 and res.stats["teacher_calls"] == 1


# ------------------------------------------------------------------ real tiny model
def check_outputs(out_dir, samples, k):
    got = load_samples(out_dir / AUGMENTED)
    parents = {s.id: s for s in samples}
    assert {s.meta["parent_id"] for s in got} == set(parents)
    for s in got:
        parent = parents[s.meta["parent_id"]]
        assert s.meta["method"] in ("shuffle", "rewrite+shuffle")
        assert check_remap(parent.replace(question=s.question), s) == []
        assert s.id == parent.id or re.fullmatch(re.escape(parent.id) + r"#aug[1-9]", s.id)
    recs = [json.loads(line) for line in (out_dir / REWRITES).read_text().splitlines()]
    assert [r["id"] for r in recs] == [s.id for s in samples]
    for r in recs:
        assert r["attempts"] and all(isinstance(a["raw"], str) for a in r["attempts"])
        assert all(v["kept"] or v["reason"] for v in r["variants"])
    stats = Manifest.load(out_dir).stats
    assert stats["samples_in"] == len(samples) and stats["samples_out"] == len(got) >= len(samples)
    assert stats["variants_requested"] == k * len(samples)
    assert sum(stats["reasons"].values()) + stats["variants_kept"] == stats["variants_parsed"]
    return got, stats


def test_tiny_random_model_through_transformers_backend_survives(tmp_path, tiny_generator):
    samples = short_questions(4)
    config = AugmentConfig(k=2, max_new_tokens=8, retries=1, batch_size=2, temperature=1.0)
    run_augment(samples, tiny_generator, config, tmp_path, show_progress=False)
    _, stats = check_outputs(tmp_path, samples, 2)
    assert stats["replies"] >= len(samples) and stats["llm_calls"] >= 2
    assert stats["reasons"] or stats["reply_errors"]  # garbage is named, not silently kept


class Counting(Generator):
    """Wraps a generator: counts calls and prompts; raises KeyboardInterrupt on call ``fail_on``; can stall."""

    def __init__(self, inner, fail_on=None, slow_on=None, slow_s=0.0):
        self.inner, self.fail_on, self.slow_on, self.slow_s = inner, fail_on, slow_on, slow_s
        self.calls, self.prompts = 0, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, prompts, params, progress=None):
        self.calls += 1
        if self.calls == self.fail_on:
            raise KeyboardInterrupt
        if self.slow_on and any(self.slow_on in json.dumps(p) for p in prompts):
            time.sleep(self.slow_s)
        self.prompts += [json.dumps(p) for p in prompts]
        return self.inner.generate(prompts, params, progress)


def short_questions(n):
    """The shortest train question of each of the first ``n`` tasks: quick prompts for the tiny model."""
    by_task = {}
    for s in load_bundled("sciknoweval/all", split="train"):
        if s.task not in by_task or len(s.question) < len(by_task[s.task].question):
            by_task[s.task] = s
    return list(by_task.values())[:n]


def test_interrupted_run_resumes_to_the_same_output_without_repeating_calls(tmp_path, tiny_generator):
    samples = short_questions(4)
    config = AugmentConfig(k=2, max_new_tokens=8, retries=1, batch_size=2, temperature=1.0, seed=4, model="tiny")
    full = Counting(tiny_generator)
    run_augment(samples, full, config, tmp_path / "full", show_progress=False)
    assert full.calls == 4  # 2 batches x (ask + re-ask)

    broken = Counting(tiny_generator, fail_on=3)  # dies on the first call of the second batch
    with pytest.raises(KeyboardInterrupt):
        run_augment(samples, broken, config, tmp_path / "resumed", show_progress=False)
    finished = [json.loads(line)["id"] for line in (tmp_path / "resumed" / REWRITES).read_text().splitlines()]
    assert finished == [s.id for s in samples[:2]] and not (tmp_path / "resumed" / AUGMENTED).exists()
    again = Counting(tiny_generator)
    run_augment(samples, again, config, tmp_path / "resumed", show_progress=False)
    # exactly the prompts the uninterrupted run sent for the unfinished batch, in the same order
    assert again.prompts == [p for p in full.prompts if not any(question_in(p, sid, samples) for sid in finished)]
    assert again.calls == 2
    for name in (AUGMENTED, REWRITES):
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "full" / name).read_text()


def question_in(prompt_json: str, sid: str, samples) -> bool:
    q = next(s.question for s in samples if s.id == sid)
    return json.dumps(q)[1:-1][:60] in prompt_json


def test_served_tiny_model_and_endpoint_timeout_resume_from_cache(tmp_path, tiny_generator):
    samples = short_questions(4)
    config = AugmentConfig(k=2, max_new_tokens=8, retries=0, batch_size=2, temperature=0.0, backend="openai",
                           model="tiny")
    stalling = Counting(tiny_generator, slow_on=json.dumps(samples[3].question)[1:40], slow_s=1.5)
    server = make_server(stalling, "tiny").start()
    try:
        client = OpenAIGenerator(server.url + "/v1", "tiny", cache_dir=tmp_path / "cache", timeout_s=0.5,
                                 max_retries=0, concurrency=1)
        with pytest.raises(GenerationError, match="timed out"):
            run_augment(samples, client, config, tmp_path / "run", show_progress=False)
    finally:
        server.stop()
    assert len((tmp_path / "run" / REWRITES).read_text().splitlines()) == 2

    healthy = Counting(tiny_generator)
    server = make_server(healthy, "tiny").start()
    try:
        client = OpenAIGenerator(server.url + "/v1", "tiny", cache_dir=tmp_path / "cache", concurrency=1)
        run_augment(samples, client, config, tmp_path / "run", show_progress=False)
        # batch 1 from rewrites.jsonl, sample 2 (asked before the stall) from the HTTP cache: one prompt is paid
        assert len(healthy.prompts) == 1 and question_in(healthy.prompts[0], samples[3].id, samples)
        got, _ = check_outputs(tmp_path / "run", samples, 2)
        fresh = OpenAIGenerator(server.url + "/v1", "tiny", concurrency=1)
        run_augment(samples, fresh, config, tmp_path / "direct", show_progress=False)
    finally:
        server.stop()
    assert (tmp_path / "run" / AUGMENTED).read_text() == (tmp_path / "direct" / AUGMENTED).read_text()
    assert all(s.meta["generator"] in (None, "openai:tiny") for s in got)


def test_cli_against_a_served_model_prints_summary(tmp_path, tiny_generator, capsys):
    from openrft.cli.main import main as cli

    server = make_server(tiny_generator, "tiny").start()
    try:
        rc = cli(["augment", "--data", "sciknoweval/chemical_calculation", "--limit", "2", "--backend", "openai",
                  "--base-url", server.url + "/v1", "--model", "tiny", "--k", "2", "--max-new-tokens", "8",
                  "--retries", "0", "--out", str(tmp_path / "aug"), "--quiet"])
    finally:
        server.stop()
    assert rc == 0
    printed = capsys.readouterr().out
    assert re.search(r"samples: 2 in -> \d+ out", printed) and "variants: 4 asked" in printed
    assert "gold letters:" in printed and str(tmp_path / "aug" / AUGMENTED) in printed
    assert (tmp_path / "aug" / "http-cache").is_dir()
    assert cli(["augment", "--data", "nope/none", "--k", "0", "--out", str(tmp_path / "x")]) == 2


def test_a_prompt_the_backend_refuses_fails_alone_and_the_run_goes_on(tmp_path):
    class Picky(Scripted):
        def generate(self, prompts, params, progress=None):
            if any(Q3.question in question_of(p) for p in prompts):
                self.calls += 1
                raise ValueError("prompt is longer than the model's context")
            return super().generate(prompts, params, progress)

    gen = Picky(lambda sid, attempt: " <sep> ".join(GOOD.get(sid, ["x"])))
    res = run_augment([Q1, Q3, Q2], gen, AugmentConfig(k=2, retries=1, batch_size=3), tmp_path, show_progress=False)
    rec = res.records["q3"]
    assert rec["status"] == "failed" and [a["error"] for a in rec["attempts"]] == ["generation_error"] * 2
    assert "context" in rec["attempts"][0]["detail"]
    assert res.records["q1"]["status"] == res.records["q2"]["status"] == "ok"
    assert [s.id for s in res.samples if s.meta["parent_id"] == "q3"] == ["q3"]
    assert res.stats["reply_errors"] == {"generation_error": 2}

    class Down(Generator):
        def generate(self, prompts, params, progress=None):
            raise GenerationError("POST http://x/v1/chat/completions failed", url="http://x", status=None)

    with pytest.raises(GenerationError):  # the endpoint itself is down: stop, do not record failures
        run_augment([Q1], Down(), AugmentConfig(k=2), tmp_path / "down", show_progress=False)
    assert not (tmp_path / "down" / REWRITES).exists()


def test_single_mode_samples_one_variant_per_reply():
    class Sampler(Generator):
        name, model = "sampler", "s"

        def __init__(self):
            self.params = []

        def generate(self, prompts, params, progress=None):
            self.params.append(params)
            assert all("Output only the rewritten question." in p[-1]["content"] for p in prompts)
            return [[Completion(f"Variant {j + 1}: {GOOD['q1'][j % 4]}", 9) for j in range(params.n)]
                    for _ in prompts]

    gen = Sampler()
    res = run_augment([Q1], gen, AugmentConfig(k=3, mode="single", retries=0), show_progress=False)
    assert [p.n for p in gen.params] == [3] and gen.params[0].temperature > 0
    rec = res.records["q1"]
    assert [a["sample"] for a in rec["attempts"]] == [0, 1, 2] and rec["kept"] == GOOD["q1"][:3]
    assert [s.question for s in res.samples[1:]] == GOOD["q1"][:3]
    with pytest.raises(ValueError, match="temperature"):
        AugmentConfig(mode="single", temperature=0)
