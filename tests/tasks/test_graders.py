"""Task classes: registry, prompts, grading, and agreement on GSM8K gold answers and hand-written traces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import openrft
from openrft.data.sample import DataError, Sample
from openrft.tasks import MCQTask, NumericTask, TextTask, get_task, task_for, task_names
from openrft.tasks.prompts import MCQ_INSTRUCTION, NUMERIC_INSTRUCTION, TEXT_INSTRUCTION

REPO = Path(__file__).resolve().parents[2]
TRACES = Path(__file__).with_name("traces.jsonl")
GSM8K_CANDIDATES = (
    Path(openrft.__file__).parent / "data" / "bundled" / "gsm8k" / "test.jsonl",
    REPO / "src" / "openrft" / "data" / "bundled" / "gsm8k" / "test.jsonl",
    REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl",
)
MOLES = ("3 moles", "6 moles", "9 moles", "12 moles")


def mcq(answer: str = "B", **meta: str) -> Sample:
    return Sample(id="m1", task="chem", question="How many moles?", choices=MOLES, answer=answer, answer_type="mcq", meta=meta)


def numeric(answer: str = "18", **meta: str) -> Sample:
    return Sample(id="n1", task="gsm8k", question="How much?", answer=answer, answer_type="numeric", meta=meta)


def trace_sample(rec: dict) -> Sample:
    return Sample(
        id=rec["id"], task="traces", question="(see trace)", choices=rec.get("choices"),
        answer=rec["gold"], answer_type=rec["answer_type"],
    )


def load_traces() -> list[dict]:
    return [json.loads(line) for line in TRACES.read_text(encoding="utf-8").splitlines() if line.strip()]


def gsm8k_gold() -> Iterator[tuple[str, str]]:
    """(rationale ending in '#### n', n) for every GSM8K test record; skips the test when the data is absent."""
    path = next((p for p in GSM8K_CANDIDATES if p.is_file()), None)
    if path is None:
        pytest.skip("GSM8K test data not found (bundled or ../shared/data/gsm8k/test.jsonl)")
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        rationale = next(v for v in (rec.get("answer"), (rec.get("meta") or {}).get("rationale")) if v and "####" in v)
        yield rationale, rationale.rsplit("####", 1)[1].strip()


# ---- registry and prompts -------------------------------------------------------------
@pytest.mark.parametrize(("name", "cls"), [("mcq", MCQTask), ("numeric", NumericTask), ("text", TextTask)])
def test_registry(name: str, cls: type) -> None:
    task = get_task(name)
    assert isinstance(task, cls)
    assert task.name == task.answer_type == name
    assert name in task_names()


def test_task_for_sample_and_unknown_name() -> None:
    assert isinstance(task_for(mcq()), MCQTask)
    assert isinstance(task_for(numeric()), NumericTask)
    with pytest.raises(ValueError, match="valid: .*mcq.*numeric"):
        get_task("nope")


def test_instructions_come_from_prompts() -> None:
    assert MCQTask.instruction == MCQ_INSTRUCTION and "\\boxed{}" in MCQ_INSTRUCTION
    assert NumericTask.instruction == NUMERIC_INSTRUCTION and "\\boxed{}" in NUMERIC_INSTRUCTION
    assert TextTask.instruction == TEXT_INSTRUCTION


def test_mcq_prompt_lists_options_as_letter_lines() -> None:
    task = MCQTask()
    prompt = task.user_prompt(mcq())
    assert prompt.startswith(MCQ_INSTRUCTION)
    assert prompt.endswith("How many moles?\n\nA. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles")


def test_mcq_render_question_needs_choices() -> None:
    bad = Sample(id="x", task="t", question="q?", answer="B", answer_type="text")
    with pytest.raises(DataError, match="choices"):
        MCQTask().render_question(bad)


def test_render_answer_ends_with_boxed_line_and_grades_correct() -> None:
    s = mcq("C", rationale="Three per mole, three moles: 9.")
    reply = MCQTask().render_answer(s)
    assert reply == "Three per mole, three moles: 9.\nThe answer is \\boxed{C}."
    assert MCQTask().grade(reply, s).correct
    n = numeric("1,450,000", rationale="130,000 * 2.5 = 325,000 ...\n#### 1,450,000")
    reply = NumericTask().render_answer(n)
    assert reply.endswith("\nThe answer is \\boxed{1450000}.") and "####" not in reply
    assert NumericTask().grade(reply, n).correct
    assert NumericTask().render_answer(numeric("18")) == "The answer is \\boxed{18}."


def test_few_shot_messages_use_reference_replies() -> None:
    task = MCQTask()
    msgs = task.messages(mcq("A"), examples=[mcq("C")])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[1]["content"] == "The answer is \\boxed{C}."


def test_few_shot_replies_show_worked_steps_when_any_are_known() -> None:
    """Dataset solution first, then a verified trace, then the bare answer; the asked question never shows one."""
    from openrft.tasks import TRACE_KEY

    task = NumericTask()
    worked = numeric("18", rationale="9 * 2 = 18")
    traced = numeric("18").replace(meta={TRACE_KEY: "Nine times two is 18. \\boxed{18}"})
    both = numeric("18", rationale="9 * 2 = 18").replace(meta={"rationale": "9 * 2 = 18", TRACE_KEY: "other"})
    bare = numeric("18")
    msgs = task.messages(numeric("20", rationale="secret"), examples=[worked, traced, both, bare])
    assert [m["content"] for m in msgs[1:8:2]] == [
        "9 * 2 = 18\nThe answer is \\boxed{18}.", "Nine times two is 18. \\boxed{18}",
        "9 * 2 = 18\nThe answer is \\boxed{18}.", "The answer is \\boxed{18}."]
    assert "secret" not in msgs[-1]["content"]


# ---- grading --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("completion", "extracted", "correct"),
    [
        ("\\boxed{B}", "B", True),
        ("The answer is 6 moles.", "B", True),
        ("Answer: (c)", "C", False),
        ("A. 3 moles\nB. 6 moles\nC. 9 moles\nD. 12 moles", None, False),
        ("B or C", None, False),
    ],
)
def test_mcq_grade(completion: str, extracted: str | None, correct: bool) -> None:
    grade = MCQTask().grade(completion, mcq("B"))
    assert (grade.extracted, grade.correct) == (extracted, correct)


def test_numeric_grade_and_tolerance() -> None:
    s = numeric("18")
    assert NumericTask().grade("$18.00", s).correct
    assert not NumericTask().grade("\\boxed{18.1}", s).correct
    assert get_task("numeric", rel_tol=0.01).grade("\\boxed{18.1}", s).correct
    assert not NumericTask().grade("5 or 18", s).correct
    assert NumericTask().is_equivalent("0.75", numeric("3/4"))


def test_numeric_gold_must_be_a_number() -> None:
    with pytest.raises(DataError, match="not one number"):
        NumericTask().grade("18", numeric("eighteen"))


def test_text_grade_with_aliases() -> None:
    s = Sample(id="t", task="t", question="?", answer="United States", meta={"aliases": ["USA"]})
    assert TextTask().grade("The answer is: the United States.", s).correct
    assert TextTask().grade("\\boxed{U.S.A.}", s).correct
    assert not TextTask().grade("Canada", s).correct


def test_reward_calls_the_grader() -> None:
    task = MCQTask()
    samples = [mcq("B"), mcq("A"), mcq("C")]
    assert [g.score for g in task.grade_batch(["\\boxed{B}", "\\boxed{B}", "C. 9 moles"], samples)] == [1.0, 0.0, 1.0]


# ---- agreement on real gold answers and traces ----------------------------------------
def test_gsm8k_gold_rationales_extract_to_gold_answer() -> None:
    task = NumericTask()
    rows = list(gsm8k_gold())
    assert len(rows) > 1000
    wrong = [(gold, task.extract(r, numeric(gold))) for r, gold in rows if not task.grade(r, numeric(gold)).correct]
    assert wrong == []
    # the extracted text is canonical: digits only, no thousands separators
    assert all(task.extract(r, numeric(g)) == g.replace(",", "") for r, g in rows)


def test_traces_file_is_rich_enough() -> None:
    traces = load_traces()
    assert len(traces) >= 60
    assert len({t["id"] for t in traces}) == len(traces)
    kinds = {t["answer_type"] for t in traces}
    assert {"mcq", "numeric"} <= kinds
    nulls = [t for t in traces if t["expected"] is None]
    assert len(nulls) >= 20
    assert sum("echo" in t["note"] for t in nulls) >= 5 and sum("hedge" in t["note"] for t in nulls) >= 5


@pytest.mark.parametrize("trace", load_traces(), ids=lambda t: f"{t['id']}-{t['note']}")
def test_trace_extraction_agrees(trace: dict) -> None:
    sample = trace_sample(trace)
    task = task_for(sample)
    assert task.extract(trace["completion"], sample) == trace["expected"]
    grade = task.grade(trace["completion"], sample)
    expected_correct = trace["expected"] is not None and task.is_equivalent(trace["expected"], sample)
    assert grade.correct is expected_correct


def test_unparseable_answers_are_never_correct() -> None:
    """A completion with no answer scores 0 whatever the gold is."""
    for trace in (t for t in load_traces() if t["expected"] is None):
        sample = trace_sample(trace)
        task = task_for(sample)
        golds = sample.labels if sample.answer_type == "mcq" else (sample.answer, "0", "1", "5", "6", "18")
        for gold in golds:
            assert not task.grade(trace["completion"], sample.replace(answer=gold)).correct, (trace["id"], gold)
