"""Tasks: prompt template + answer extraction + grader, one per answer type.

Importing this package registers every built-in task (``mcq``, ``numeric``, ``text``,
``program``), so :func:`get_task` and :func:`task_for` find them by name.
"""

from openrft.tasks.base import Grade, Task, get_task, register_task, task_for, task_names
from openrft.tasks.mcq import MCQTask
from openrft.tasks.numeric import NumericTask
from openrft.tasks.program import ProgramTask
from openrft.tasks.text import TextTask

__all__ = [
    "Grade",
    "MCQTask",
    "NumericTask",
    "ProgramTask",
    "Task",
    "TextTask",
    "get_task",
    "register_task",
    "task_for",
    "task_names",
]
