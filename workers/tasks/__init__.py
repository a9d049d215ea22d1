"""Task registry: built-in names, or a user's ``package.module:factory``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from prunehive.workers.tasks.base import Evaluation, Task

BUILTINS: dict[str, str] = {
    "digits-mlp": "prunehive.workers.tasks.digits:DigitsMLP",
    "digits-cnn": "prunehive.workers.tasks.digits:DigitsCNN",
    "code-lm": "prunehive.workers.tasks.code_lm:CodeLMTask",
}

__all__ = ["BUILTINS", "Evaluation", "Task", "TaskError", "load_task", "describe_tasks"]


class TaskError(ValueError):
    """A task name or factory that cannot be turned into a Task."""


def _import(ref: str) -> Callable[..., object]:
    module_name, _, attr = ref.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # like uvicorn: a user's module next to their spec imports
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(f"task {ref!r}: cannot import module {module_name!r} ({exc})") from None
    try:
        factory: Callable[..., object] = getattr(module, attr)
    except AttributeError:
        raise TaskError(f"task {ref!r}: module {module_name!r} has no attribute {attr!r}") from None
    return factory


def load_task(name: str, seed: int = 0) -> Task:
    """Build a task from a built-in name or ``package.module:factory`` (called with ``seed=``)."""
    if name in BUILTINS:
        ref = BUILTINS[name]
    elif ":" in name:
        ref = name
    else:
        raise TaskError(f"unknown task {name!r}; choose one of {', '.join(BUILTINS)} or give package.module:factory")
    factory = _import(ref)
    try:
        task = factory(seed=seed)
    except TypeError:
        task = factory()
    if not isinstance(task, Task):
        raise TaskError(f"task {name!r}: factory returned {type(task).__name__}, not a prunehive Task")
    return task


def describe_tasks() -> list[dict[str, str]]:
    """Name, quality kind and description of every built-in task."""
    out = []
    for name, ref in BUILTINS.items():
        cls = _import(ref)
        out.append({"name": name, "quality": str(cls.quality), "description": str(cls.description)})  # type: ignore[attr-defined]
    return out
