"""The sample-until-correct loop on the real tiny model: early stop, budget, fallback, drop, m > 1, truncation."""

from __future__ import annotations

import dataclasses
import json

import pytest
from synth_helpers import Scripted, key, numeric

from openrft.data.sample import Sample
from openrft.synthesize import (
    SynthesizeConfig, load_traces, round_sizes, run_synthesize, synthesis_stats,
)
from openrft.tasks import ProgramTask, grade_all, task_for
from openrft.tasks.extract import extract_text


def _run(samples, gen, config, out=None):
    return run_synthesize(samples, gen, config, out, show_progress=False)


def test_round_sizes_grow_and_never_exceed_the_budget():
    for budget in range(1, 70):
        for schedule in ([4, 8, 16, 32], [1], [3, 5], [64]):
            sizes = round_sizes(schedule, budget)
            assert sum(sizes) == budget and all(n >= 1 for n in sizes)
            assert sizes[:-1] == [schedule[min(i, len(schedule) - 1)] for i in range(len(sizes) - 1)]
    with pytest.raises(ValueError, match="budget"):
        round_sizes([4], 0)
    with pytest.raises(ValueError, match="fallback"):
        SynthesizeConfig(fallback="skip")


def test_stops_at_the_first_correct_trace_found_by_the_real_model(tiny_generator):
    """Gold = what the tiny model itself writes at a known attempt of round 2; nothing is injected."""
    config = SynthesizeConfig(budget=14, rounds=(2, 4), temperature=1.0, max_new_tokens=5, seed=3,
                              accept_truncated=True)
    settings = config.settings
    probe = Sample(id="t/0", task="echo", question="Say something.", answer="x")
    prompt = [task_for(probe).messages(probe)]
    first = [c.text for c in tiny_generator.generate(prompt, settings.params(0))[0]]
    second = [c.text for c in tiny_generator.generate(prompt, settings.params(1))[0]]
    earlier = {extract_text(t) for t in first}
    j = next(j for j, t in enumerate(second) if extract_text(t) and extract_text(t) not in earlier)
    gold = extract_text(second[j])
    target = probe.replace(answer=gold)
    never = Sample(id="t/1", task="echo", question="Say nothing at all.", answer="unreachable zebra quartz")
    gen = Scripted(tiny_generator, seed=3, sizes=settings.sizes)

    rec, rec_never = _run([target, never], gen, config).records

    assert rec["first_correct"] == 2 + j + 1 and rec["attempts"] == 6
    assert rec["correct"] == sum(extract_text(t) == gold for t in second)
    assert rec["traces"] == [{"text": second[j], "extracted": gold}] and not rec["fallback"]
    assert gen.asked("Say something.") == [2, 4], "closed after round 2: never asked again"
    assert gen.asked("Say nothing at all.") == [2, 4, 4, 4]
    assert rec_never["attempts"] == 14 and rec_never["fallback"] and rec_never["pass_rate"] == 0
    assert [len(c["questions"]) for c in gen.calls] == [2, 2, 1, 1], "one generate call per round"


def test_greedy_decoding_makes_one_attempt(tiny_generator):
    """Repeats of a greedy reply are identical, so temperature 0 asks once, whatever the budget."""
    config = SynthesizeConfig(temperature=0.0, budget=64, max_new_tokens=3)
    gen = Scripted(tiny_generator, sizes=config.settings.sizes, inject={key(1): {1: "\\boxed{8}"}})
    solved, unsolved = _run([numeric(1, 8), numeric(2, 9)], gen, config).records
    assert [c["n"] for c in gen.calls] == [1]
    assert (solved["attempts"], solved["correct"], solved["fallback"]) == (1, 1, False)
    assert (unsolved["attempts"], unsolved["fallback"]) == (1, True)


def test_truncated_correct_trace_is_rejected_unless_accepted(tiny_generator):
    probe = Sample(id="tr/0", task="echo", question="Tell me a word.", answer="x")
    config = SynthesizeConfig(budget=2, rounds=(2,), temperature=1.0, max_new_tokens=3, seed=1)
    outs = tiny_generator.generate([task_for(probe).messages(probe)], config.settings.params(0))[0]
    assert outs[0].finish_reason == "length"
    sample = probe.replace(answer=extract_text(outs[0].text))
    strict = _run([sample], tiny_generator, config).records[0]
    assert strict["correct"] == 0 and strict["fallback"] and strict["truncated"] == 2
    loose = _run([sample], tiny_generator, dataclasses.replace(config, accept_truncated=True))
    assert loose.records[0]["correct"] >= 1 and not loose.records[0]["fallback"]


def test_known_attempt_budget_and_bare_answer_fallback(tiny_generator, tmp_path):
    config = SynthesizeConfig(budget=20, rounds=(4, 8), temperature=1.0, max_new_tokens=3, seed=0)
    gen = Scripted(tiny_generator, seed=0, sizes=config.settings.sizes,
                   inject={key(1): {7: "6 * 1220 = 7320, minus 1.\nThe answer is \\boxed{7319}."}})
    samples = [numeric(1, 7319), numeric(2, 98765)]
    res = _run(samples, gen, config, tmp_path)
    solved, unsolved = res.records

    assert (solved["attempts"], solved["correct"], solved["first_correct"]) == (12, 1, 7)
    assert solved["pass_rate"] == pytest.approx(1 / 12)
    assert solved["traces"] == [{"text": "6 * 1220 = 7320, minus 1.\nThe answer is \\boxed{7319}.",
                                 "extracted": "7319"}]
    assert gen.asked(key(1)) == [4, 8] and gen.asked(key(2)) == [4, 8, 8]
    assert sum(gen.asked(key(2))) == unsolved["attempts"] == config.budget

    task = task_for(samples[1])
    assert unsolved["fallback"] and unsolved["correct"] == 0
    assert unsolved["traces"] == [{"text": task.render_answer(samples[1]), "extracted": "98765"}]
    assert task.grade(unsolved["traces"][0]["text"], samples[1]).correct

    assert load_traces(tmp_path) == [(samples[0], solved["traces"][0]["text"], False),
                                     (samples[1], task.render_answer(samples[1]), True)]
    stats = json.loads((tmp_path / "manifest.json").read_text())["stats"]
    assert stats["attempts_histogram"] == {"12": 1, "20": 1} and stats["fallback_fraction"] == 0.5
    assert stats["mean_pass_rate"] == pytest.approx(1 / 24) and stats["traces"] == 1
    assert stats["completions_generated"] == 32 and stats["traces_per_s"] > 0


def test_drop_mode_drops_unsolved_questions(tiny_generator, tmp_path):
    config = SynthesizeConfig(budget=3, rounds=(2,), max_new_tokens=2, fallback="drop")
    gen = Scripted(tiny_generator, sizes=config.settings.sizes, inject={key(1): {2: "\\boxed{5}"}})
    res = _run([numeric(1, 5), numeric(2, 6)], gen, config, tmp_path)
    kept, dropped = res.records
    assert not kept["dropped"] and kept["traces"][0]["extracted"] == "5"
    assert dropped["dropped"] and dropped["traces"] == [] and not dropped["fallback"]
    assert dropped["attempts"] == 3
    assert [s.id for s, _, _ in load_traces(tmp_path / "traces.jsonl")] == ["num/1"]
    assert synthesis_stats(res.records)["dropped"] == 1


def test_m_keeps_up_to_m_distinct_correct_traces(tiny_generator):
    config = SynthesizeConfig(budget=12, rounds=(4,), max_new_tokens=2, m=2)
    same, other = "So it is \\boxed{42}.", "6 times 7: \\boxed{42}"
    gen = Scripted(tiny_generator, sizes=config.settings.sizes,
                   inject={key(1): {2: same, 3: same, 5: other, 6: "\\boxed{42}"},
                           key(2): {1: same, 4: same}})
    rec, rec_dup = _run([numeric(1, 42), numeric(2, 42)], gen, config).records
    assert [t["text"] for t in rec["traces"]] == [same, other]
    assert (rec["attempts"], rec["correct"]) == (8, 4)
    assert gen.asked(key(1)) == [4, 4]
    # the same correct text twice is one trace; the question stays open until the budget, without fallback
    assert [t["text"] for t in rec_dup["traces"]] == [same] and rec_dup["attempts"] == 12
    assert rec_dup["correct"] == 2 and not rec_dup["fallback"]


def test_empty_teacher_replies_are_wrong_and_never_crash(tiny_generator):
    config = SynthesizeConfig(budget=4, rounds=(2,), max_new_tokens=2)
    gen = Scripted(tiny_generator, sizes=config.settings.sizes, empty=True)
    samples = [numeric(1, 3), Sample(id="p/1", task="pot", question="Return 7.", answer="7", answer_type="program"),
               Sample(id="m/1", task="mc", question="Pick.", choices=("a", "b"), answer="B", answer_type="mcq")]
    recs = _run(samples, gen, config).records
    assert [(r["correct"], r["attempts"], r["fallback"]) for r in recs] == [(0, 4, True)] * 3
    assert grade_all(samples[:1] * 2, ["", "   "], {"numeric": task_for(samples[0])})[0].correct is False


def test_program_questions_grade_through_one_batched_sandbox_call_per_round(tiny_generator, monkeypatch):
    calls = []
    original = ProgramTask.grade_batch

    def counting(self, completions, samples):
        calls.append(len(completions))
        return original(self, completions, samples)

    monkeypatch.setattr(ProgramTask, "grade_batch", counting)
    config = SynthesizeConfig(budget=6, rounds=(2, 4), max_new_tokens=2)
    code = "```python\ndef solution():\n    apples = 6\n    return apples * 7\n```"
    gen = Scripted(tiny_generator, sizes=config.settings.sizes, inject={"Six bags": {4: code}})
    samples = [Sample(id=f"p/{i}", task="pot", question=q, answer="42", answer_type="program")
               for i, q in enumerate(["Six bags of seven apples?", "Seven bags of six pears?"])]
    solved, fell_back = _run(samples, gen, config).records
    assert solved["traces"] == [{"text": code, "extracted": "42"}] and solved["attempts"] == 6
    assert fell_back["fallback"] and fell_back["traces"][0]["extracted"] == "42"
    # one call per round (2 questions x 2, then x 4; blank replies skip the grader), then one for the fallback
    assert len(calls) == 3 and calls[0] <= 4 and 1 <= calls[1] <= 8 and calls[2] == 1
