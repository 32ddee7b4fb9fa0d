"""Tasks: prompt template + answer extraction + grader, one per answer type.

Importing this package registers every built-in task (``mcq``, ``numeric``, ``text``,
``program``), so :func:`get_task` and :func:`task_for` find them by name.
"""

from openrft.tasks.base import (
    RATIONALE_KEYS, TRACE_KEY, Grade, Task, get_task, gold_rationale, grade_all, register_task, task_for, task_names,
    without_rationale,
)
from openrft.tasks.mcq import MCQTask
from openrft.tasks.numeric import NumericTask
from openrft.tasks.program import ProgramTask
from openrft.tasks.text import TextTask

__all__ = [
    "RATIONALE_KEYS",
    "TRACE_KEY",
    "Grade",
    "MCQTask",
    "NumericTask",
    "ProgramTask",
    "Task",
    "TextTask",
    "get_task",
    "gold_rationale",
    "grade_all",
    "register_task",
    "task_for",
    "task_names",
    "without_rationale",
]
