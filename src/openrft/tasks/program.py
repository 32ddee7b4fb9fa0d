"""Program-of-thought task (ReFT's P-CoT): the model writes ``solution()``, the sandbox runs it.

The reply is graded by executing the program in :mod:`openrft.tasks.sandbox` (never in
this process) and comparing the number ``solution()`` returns with the gold answer, with
the same tolerance as the numeric task. :meth:`ProgramTask.grade_batch` runs a whole batch
of programs in one parallel sandbox call; rewards, synthesis, labelling and evaluation all grade
through it (:func:`~openrft.tasks.grade_all`).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from fractions import Fraction

from openrft.data.sample import Sample
from openrft.tasks.base import Grade, Task, register_task
from openrft.tasks.extract import ABS_TOL, REL_TOL, format_number, numbers_close, parse_number, sample_tolerances
from openrft.tasks.sandbox import ExecResult, run_programs

PROGRAM_INSTRUCTION = (
    "Solve the problem by writing a Python program. Define a function `solution()` that works "
    "through the problem step by step, with one well-named variable per intermediate quantity, "
    "and returns the final answer as a number. Reply with the program only, in a ```python code block."
)

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.M | re.S)
_PY_LANGS = {"", "python", "python3", "py", "py3"}
_IMPORT = re.compile(r"(?:import\s+\w|from\s+[\w.]+\s+import\s)")
# Top-level lines that continue a program after the entry function (anything else is prose).
_CODE_LINE = re.compile(
    r"(?:def\s|class\s|async\s+def\s|import\s|from\s+[\w.]+\s+import\s|@|#|if\s+__name__|print\s*\(|return\b"
    r"|[A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_]\w*)*\s*(?:[-+*/%]|//|\*\*)?=(?!=)|[A-Za-z_][\w.]*\s*\(.*\)\s*$)"
)


def _defines(code: str, entry: str) -> bool:
    return re.search(rf"^[ \t]*def\s+{re.escape(entry)}\s*\(", code, re.M) is not None


def extract_code(completion: str, entry: str = "solution") -> str | None:
    '''The program in a completion, or ``None`` when it holds none.

    The last fenced Python block that defines ``entry`` wins; without one, the raw text
    from ``def entry(`` on (with the import lines just before it), up to the first line
    of prose after the function.

    >>> extract_code("Here:\\n```python\\ndef solution():\\n    return 6 * 7\\n```\\nDone.")
    'def solution():\\n    return 6 * 7'
    >>> print(extract_code("import math\\ndef solution():\\n    r = 2\\n    return math.pi * r ** 2\\nThe area is 12.57."))
    import math
    def solution():
        r = 2
        return math.pi * r ** 2
    >>> extract_code("The answer is 42.") is None
    True
    '''
    blocks = [m[2] for m in _FENCE.finditer(completion) if m[1].lower() in _PY_LANGS]
    with_entry = [b for b in blocks if _defines(b, entry)]
    if with_entry:
        return with_entry[-1].strip("\n").rstrip() or None
    m = re.search(rf"^([ \t]*)def\s+{re.escape(entry)}\s*\(", completion, re.M)
    if m is None:
        return None
    indent = m[1]
    before = completion[: m.start()].splitlines()
    head: list[str] = []
    while before and (_IMPORT.match(before[-1].strip()) or not before[-1].strip()):
        head.insert(0, before.pop())
    body: list[str] = []
    for i, line in enumerate(completion[m.start() :].splitlines()):
        stripped = line.strip()
        if stripped.startswith("```"):
            break
        if i and stripped and not line.startswith(indent + " ") and not line.startswith(indent + "\t"):
            if not (line.startswith(indent) and _CODE_LINE.match(line[len(indent) :])):
                break
        body.append(line)
    code = textwrap.dedent("\n".join([h for h in head if h.strip()] + body)).strip("\n").rstrip()
    return code or None


def answer_from_result(result: ExecResult) -> str | None:
    """Canonical number a sandboxed run produced: the returned value, else the last printed line.

    >>> answer_from_result(ExecResult(ok=True, value=72.0))
    '72'
    >>> answer_from_result(ExecResult(ok=True, value=None, stdout="total\\n18.50\\n"))
    '18.5'
    >>> answer_from_result(ExecResult(ok=False, error="timeout")) is None
    True
    """
    if not result.ok:
        return None
    value = result.value
    if isinstance(value, float):
        try:
            number: Fraction | None = Fraction(value)
        except (OverflowError, ValueError):  # inf, nan
            return None
    elif isinstance(value, str):
        number = parse_number(value)
    else:
        lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
        number = parse_number(lines[-1]) if lines else None
    return format_number(number) if number is not None else None


@register_task("program")
class ProgramTask(Task):
    """Program-of-thought: the completion is a Python program whose ``solution()`` returns the answer.

    ``timeout_s`` and ``memory_mb`` bound each program run; ``max_workers`` bounds how many
    run at once (default ``min(4, cpu count)``); ``rel_tol``/``abs_tol`` are the numeric
    tolerances of :func:`openrft.tasks.extract.numbers_close`.
    """

    name = "program"
    answer_type = "program"
    instruction = PROGRAM_INSTRUCTION
    entry = "solution"

    def __init__(
        self,
        timeout_s: float = 5.0,
        memory_mb: int = 512,
        max_workers: int | None = None,
        rel_tol: float = REL_TOL,
        abs_tol: float = ABS_TOL,
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_workers = max_workers
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol

    # ---- prompt ---------------------------------------------------------------
    def render_question(self, sample: Sample) -> str:
        return sample.question.strip()

    def has_reference_solution(self, sample: Sample) -> bool:
        return isinstance(sample.meta.get("program"), str) and extract_code(sample.meta["program"], self.entry) is not None

    def render_answer(self, sample: Sample) -> str:
        """The reference program (``meta["program"]``, if it defines ``solution``), else one returning the gold, fenced."""
        program = sample.meta.get("program")
        code = extract_code(program, self.entry) if isinstance(program, str) else None
        if code is None:
            gold = parse_number(sample.answer)
            value = format_number(gold) if gold is not None else repr(sample.answer)
            code = f"def {self.entry}():\n    return {value}"
        return f"```python\n{code}\n```"

    # ---- grading --------------------------------------------------------------
    def execute(self, completions: Sequence[str]) -> list[ExecResult | None]:
        """Run the program of each completion in one parallel sandbox call (``None``: no program found)."""
        codes = [extract_code(c, self.entry) for c in completions]
        todo = [i for i, code in enumerate(codes) if code is not None]
        results: list[ExecResult | None] = [None] * len(codes)
        ran = run_programs(
            [codes[i] for i in todo],
            entry=self.entry,
            timeout_s=self.timeout_s,
            memory_mb=self.memory_mb,
            max_workers=self.max_workers,
        )
        for i, result in zip(todo, ran):
            results[i] = result
        return results

    def extract(self, completion: str, sample: Sample) -> str | None:
        result = self.execute([completion])[0]
        return answer_from_result(result) if result is not None else None

    def is_equivalent(self, extracted: str, sample: Sample) -> bool:
        rel_tol, abs_tol = sample_tolerances(sample.meta, self.rel_tol, self.abs_tol)
        return numbers_close(extracted, sample.answer, rel_tol=rel_tol, abs_tol=abs_tol)

    def grade_batch(self, completions: Sequence[str], samples: Sequence[Sample]) -> list[Grade]:
        """Grades of many completions, their programs run in one parallel sandbox call."""
        if len(completions) != len(samples):
            raise ValueError(f"{len(completions)} completions for {len(samples)} samples")
        grades = []
        for result, sample in zip(self.execute(completions), samples):
            extracted = answer_from_result(result) if result is not None else None
            grades.append(Grade(extracted, extracted is not None and self.is_equivalent(extracted, sample)))
        return grades
