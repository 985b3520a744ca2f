"""The task registry. A task is one module here that registers a `Task` subclass."""

from tunelab.registry import Registry
from tunelab.tasks.base import Task

TASKS: Registry[Task] = Registry("task")

__all__ = ["TASKS", "Task"]
