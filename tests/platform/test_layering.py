"""The layers' import directions, read from the source with ``ast``: the CLI depends on the jobs, never the
reverse; the jobs depend on the spec and the store, never the reverse; and drivers reach MLflow through
``Tracker`` methods rather than its client."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PLATFORM = Path(__file__).resolve().parents[2] / "platform"
BELOW_CLI = ("jobs", "store", "spec")  # layers the CLI is built on
CLI = "prunehive.platform.cli"
BELOW_JOBS = ("spec", "store")  # layers the jobs are built on
JOBS = "prunehive.platform.jobs"


def sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((PLATFORM / folder).rglob("*.py"))


def module_of(path: Path) -> str:
    parts = path.relative_to(PLATFORM.parent).with_suffix("").parts
    return ".".join(("prunehive", *(parts[:-1] if parts[-1] == "__init__" else parts)))


def imported(text: str, module: str, package: bool = False) -> Iterator[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` in ``text`` names (relative ones resolved against
    ``module``, a package when ``package``), with its line."""
    here = module.split(".") if package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            yield node.lineno, name
            yield from ((node.lineno, f"{name}.{alias.name}") for alias in node.names)


def client_uses(text: str) -> Iterator[int]:
    """Lines reading ``<...>tracker.client``: ``tracker.client``, ``self.tracker.client``, ``run.tracker.client``."""
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Attribute) and node.attr == "client":
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if name == "tracker":
                yield node.lineno


def imports_of(path: Path, layer: str) -> list[str]:
    """Where ``path`` imports ``layer`` or a module under it, anywhere in the file (functions included)."""
    found = imported(path.read_text(), module_of(path), path.name == "__init__.py")
    return [f"line {n}: {m}" for n, m in found if m == layer or m.startswith(layer + ".")]


def cli_imports(path: Path) -> list[str]:
    return imports_of(path, CLI)


def test_the_checks_see_what_they_look_for() -> None:
    """The readers find a CLI import (absolute or relative) and a tracker's client, so a pass means something."""
    text = (
        "from prunehive.platform.cli.app import out\nfrom ..cli import summaries\nx = self.tracker.client.get_run(1)\n"
    )
    found = {m for _, m in imported(text, "prunehive.platform.jobs.fake")}
    assert {f"{CLI}.app", f"{CLI}.summaries"} <= found
    assert list(client_uses(text)) == [3]
    assert not list(client_uses("x = self.tracker.log_metrics(r, {})\nc = service.client\n"))


def test_the_checks_see_imports_inside_functions() -> None:
    """A function-local or ``TYPE_CHECKING`` import of the jobs counts as much as one at the top."""
    text = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from prunehive.platform.jobs.base import JobRun\n"
        "def driver():\n    import prunehive.platform.jobs\n    from ..jobs import KINDS\n"
    )
    found = set(imported(text, "prunehive.platform.spec.kinds"))
    assert {(3, f"{JOBS}.base"), (5, JOBS), (6, JOBS), (6, f"{JOBS}.KINDS")} <= found
    assert JOBS not in {m for _, m in imported("from prunehive.platform.jobsite import x\n", "a.b")}


@pytest.mark.parametrize("path", list(sources(*BELOW_CLI)), ids=lambda p: str(p.relative_to(PLATFORM)))
def test_lower_layers_do_not_import_the_cli(path: Path) -> None:
    bad = cli_imports(path)
    assert not bad, f"{path.relative_to(PLATFORM)} imports the CLI: {bad}"


def test_drivers_use_tracker_methods_not_its_client() -> None:
    bad = [f"{p.relative_to(PLATFORM)}:{n}" for p in sources("jobs") for n in client_uses(p.read_text())]
    assert not bad, f"use a Tracker method instead of its MLflow client: {bad}"


@pytest.mark.parametrize("path", list(sources(*BELOW_JOBS)), ids=lambda p: str(p.relative_to(PLATFORM)))
def test_spec_and_store_do_not_import_the_jobs(path: Path) -> None:
    """The spec and the job store read the kinds from ``spec/kinds.py``; the jobs build on them, not the reverse."""
    bad = imports_of(path, JOBS)
    assert not bad, f"{path.relative_to(PLATFORM)} imports the jobs: {bad}"
