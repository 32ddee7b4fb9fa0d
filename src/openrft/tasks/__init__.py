"""Tasks: prompt template + answer extraction + grader, one per answer type."""

from openrft.tasks.base import Grade, Task, get_task, register_task, task_for, task_names

__all__ = ["Grade", "Task", "get_task", "register_task", "task_for", "task_names"]
