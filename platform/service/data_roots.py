"""Which files a submitted job may read: only those under the operator's data roots.

A spec reaches the server as text, so every filesystem path in it (``task.hf``, each ``task.data``
split, a task file, ``evaluation.lm_eval.include_path``) is checked here, on the raw request, before
the spec is validated: validation looks at the files, and its "does not exist" must never answer for
a path outside the roots. Each path is made absolute (a relative one is taken under the first root),
resolved through symlinks and ``..``, and refused unless it lies under a root; the spec then carries
the resolved path, so the worker reads exactly what was checked. The refusal reads the same whether
the path exists or not. Without any root, the server takes no paths at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ENV = "PRUNEHIVE_DATA_ROOTS"  # os.pathsep-separated, added to the --data-root flags
HOW_TO = "start the server with --data-root DIR or set PRUNEHIVE_DATA_ROOTS"
TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")  # a task string with these names a file ``load_task`` reads
OTHER_PATHS = (("evaluation", "lm_eval", "include_path"),)  # further spec fields that name a path jobs read


class PathRefused(ValueError):
    """A path the server will not read (HTTP 403); ``str()`` is the one line naming the field."""


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without anchors/aliases: an alias can make a small body expand without bound."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """YAML from a request or a task file: the safe loader, aliases refused."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506  (a SafeLoader subclass)


def roots_from(flags: Iterable[str], environ: str | None = None) -> tuple[Path, ...]:
    """The ``--data-root`` flags plus ``PRUNEHIVE_DATA_ROOTS``, resolved; each must be a directory."""
    named = [*flags, *(environ or "").split(os.pathsep)]
    roots: list[Path] = []
    for raw in filter(None, (n.strip() for n in named)):
        path = Path(raw).expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"--data-root: {raw!r} is not a directory")
        if path not in roots:
            roots.append(path)
    return tuple(roots)


@dataclass(frozen=True)
class DataRoots:
    roots: tuple[Path, ...] = ()

    def resolve(self, field: str, raw: object, base: Path | None = None) -> str:
        """``raw`` made absolute (relative: under ``base``, else the first root) and resolved, or
        ``PathRefused``. Non-strings are left for the spec's own validation to reject."""
        if not isinstance(raw, str):
            return raw  # type: ignore[return-value]
        if not self.roots:
            raise PathRefused(f"{field}: this server reads no model or data paths; {HOW_TO}")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = (base or self.roots[0]) / path
        try:
            real = path.resolve()
        except (OSError, RuntimeError):  # a symlink loop
            raise PathRefused(f"{field}: path is outside the server's data roots") from None
        if not any(real.is_relative_to(root) for root in self.roots):
            raise PathRefused(f"{field}: path is outside the server's data roots")
        return str(real)

    def check_spec(self, data: Any) -> Any:
        """The raw spec with every path it names resolved, or ``PathRefused`` for the first one outside."""
        if not isinstance(data, dict):
            return data
        out = dict(data)
        if "task" in out:
            out["task"] = self._task(out["task"])
        for keys in OTHER_PATHS:
            parent = _dig(out, keys[:-1])
            if parent is not None and keys[-1] in parent:
                parent[keys[-1]] = self.resolve(".".join(keys), parent[keys[-1]])
        return out

    def _task(self, task: Any) -> Any:
        if isinstance(task, str) and task.lstrip().startswith("{"):  # a task mapping as JSON text
            try:
                task = json.loads(task)
            except json.JSONDecodeError:
                return task  # the worker would refuse it too; nothing is read
        if isinstance(task, str) and task.strip().endswith(TASK_FILE_SUFFIXES):
            return self._task_file(task)
        return self._mapping(task, None) if isinstance(task, dict) else task

    def _task_file(self, name: str) -> Any:
        """A task file inside the roots is read here and its mapping put inline (checked like one), so
        no worker reads a file the server did not check. One that is not a file stays a plain string."""
        path = Path(self.resolve("task", name.strip()))
        if not path.is_file():
            return name
        try:
            data = load_yaml(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            raise ValueError(f"task: {name!r} is not a readable YAML task file") from None
        if isinstance(data, dict) and isinstance(data.get("task"), dict):
            data = data["task"]
        if not isinstance(data, dict):
            raise ValueError(f"task: {name!r} holds no task mapping (hf: DIR, data: ...)")
        return self._mapping(data, path.parent)

    def _mapping(self, task: dict[str, Any], base: Path | None) -> dict[str, Any]:
        out = dict(task)
        if "hf" in out:
            out["hf"] = self.resolve("task.hf", out["hf"], base)
        data = out.get("data")
        if isinstance(data, dict):
            out["data"] = {k: self.resolve(f"task.data.{k}", v, base) for k, v in data.items()}
        return out

    def describe(self) -> str:
        """For the server's start-up line."""
        if not self.roots:
            return "no data roots (hf: and data: paths refused)"
        return "data roots " + ", ".join(str(r) for r in self.roots)


def _dig(data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The nested mapping at ``keys``, copied on the way down so the caller's input is never changed."""
    node = data
    for key in keys:
        child = node.get(key)
        if not isinstance(child, dict):
            return None
        node[key] = child = dict(child)
        node = child
    return node
