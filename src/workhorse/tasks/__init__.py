"""Declarative tasks and their runners."""

from workhorse.tasks.spec import TaskSpec
from workhorse.tasks.store import load_task, parse_task, save_task

__all__ = ["TaskSpec", "load_task", "parse_task", "save_task"]
