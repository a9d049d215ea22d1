"""Task registry: a built-in name, a user's ``package.module:factory``, or a ``task:`` mapping (``hf:``).

Importing this package does not import torch (the spec validates ``task:`` mappings with ``spec``
alone); the task classes load when a task is built.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import yaml

from prunehive.workers.tasks.spec import HFTaskSpec, TaskError, parse_task_mapping, resolve_task_paths

if TYPE_CHECKING:
    from prunehive.workers.tasks.base import Evaluation, Task

BUILTINS: dict[str, str] = {
    "digits-mlp": "prunehive.workers.tasks.digits:DigitsMLP",
    "digits-cnn": "prunehive.workers.tasks.digits:DigitsCNN",
    "digits-cnn-bn": "prunehive.workers.tasks.digits_bn:DigitsCNNBN",
    "code-lm": "prunehive.workers.tasks.code_lm:CodeLMTask",
    "code-lm-deep": "prunehive.workers.tasks.code_lm_deep:CodeLMDeepTask",
}
TaskRef: TypeAlias = str | HFTaskSpec | Mapping[str, Any]

__all__ = ["BUILTINS", "Evaluation", "HFTaskSpec", "Task", "TaskError", "TaskRef", "load_task", "describe_tasks"]


def __getattr__(name: str) -> Any:
    """``Task`` and ``Evaluation`` on first use, so importing the registry stays free of torch."""
    if name in ("Task", "Evaluation"):
        from prunehive.workers.tasks import base  # local: keeps torch out of spec validation

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _takes_seed(factory: Callable[..., object]) -> bool:
    """Whether the factory accepts ``seed=``: decided from its signature, never by calling it twice."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: assume the documented form
        return True
    return any(p.name == "seed" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _from_file(path: Path) -> HFTaskSpec:
    """A YAML file holding a task mapping, or a whole job spec whose ``task:`` is one; relative paths in
    it are relative to the file's folder."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("task"), dict):
        data = data["task"]
    return _mapping(resolve_task_paths(data, path.absolute().parent))


def _mapping(data: Any) -> HFTaskSpec:
    try:
        return parse_task_mapping(data)
    except ValueError as exc:
        raise TaskError(f"task.{exc}") from None


def build_hf_task(spec: HFTaskSpec, seed: int = 0) -> Task:
    """The task a ``task: {hf: ...}`` mapping describes: a causal LM or an image classifier."""
    if spec.kind == "causal-lm":
        from prunehive.workers.tasks.hf_lm import HFCausalLMTask  # local: keeps torch out of spec validation

        return HFCausalLMTask(spec, seed=seed)
    from prunehive.workers.tasks.hf_image import HFImageTask  # local: keeps torch out of spec validation

    return HFImageTask(spec, seed=seed)


def load_task(task: TaskRef, seed: int = 0) -> Task:
    """Build a task from a built-in name, ``package.module:factory`` (called with ``seed=`` when it takes
    one), a ``task:`` mapping (typed, a plain mapping or its JSON text), or a YAML file holding one."""
    if not isinstance(task, str):
        return build_hf_task(_mapping(task), seed)
    if task.lstrip().startswith("{"):  # a mapping as JSON text, for configs that carry scalars only (Flower)
        try:
            return build_hf_task(_mapping(json.loads(task)), seed)
        except json.JSONDecodeError as exc:
            raise TaskError(f"task: not a valid JSON mapping ({exc})") from None
    if task in BUILTINS:
        ref = BUILTINS[task]
    elif task.endswith((".yaml", ".yml", ".json")) and Path(task).is_file():
        return build_hf_task(_from_file(Path(task)), seed)
    elif ":" in task:
        ref = task
    else:
        raise TaskError(
            f"unknown task {task!r}; choose one of {', '.join(BUILTINS)}, give package.module:factory, "
            "or a YAML file with a task mapping (hf: DIR, data: ...)"
        )
    from prunehive.workers.tasks.base import Task  # local: keeps torch out of spec validation

    factory = _import(ref)
    made = factory(seed=seed) if _takes_seed(factory) else factory()
    if not isinstance(made, Task):
        raise TaskError(f"task {task!r}: factory returned {type(made).__name__}, not a prunehive Task")
    return made


def describe_tasks() -> list[dict[str, str]]:
    """Name, quality kind and description of every built-in task."""
    out = []
    for name, ref in BUILTINS.items():
        cls = _import(ref)
        out.append({"name": name, "quality": str(cls.quality), "description": str(cls.description)})  # type: ignore[attr-defined]
    return out
