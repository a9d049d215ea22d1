"""The job kinds: each kind's spec rules (``platform/spec/kinds.py``) joined to its driver and its summary
renderer. A new kind is one folder under ``platform/jobs/`` plus one line in :data:`_RUNS` here, on top of
its line in ``spec/kinds.py`` (and, when it has its own ``<section>:``, that section's model in ``spec/``
and its field on ``JobSpec``).

Drivers and renderers are named by import path and loaded on use, so importing this registry loads
neither Ray, torch, MLflow nor matplotlib. The dependency points one way: the jobs read the spec's
table, never the reverse.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prunehive.platform.spec.kinds import KIND_RULES, KindRules

if TYPE_CHECKING:
    from prunehive.platform.jobs.base import JobRunner


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class JobKind:
    """One kind of job: its spec rules, and how it runs and prints."""

    rules: KindRules
    driver: str  # "module:Class" of a JobRun subclass
    summary: str  # "module:function" printing a finished job's summary for people

    @property
    def name(self) -> str:
        return self.rules.name

    def driver_class(self) -> Callable[..., JobRunner]:
        """The driver: called as ``(store, job_id, ray_address=..., show_progress=...)``."""
        cls: Callable[..., JobRunner] = _load(self.driver)
        return cls

    def print_summary(self, result: dict[str, Any]) -> None:
        _load(self.summary)(result)


_JOBS = "prunehive.platform.jobs"
_SHOW = "prunehive.platform.cli.summaries"
_SEARCH = f"{_JOBS}.search.driver:SearchRun"

# One line per kind of spec/kinds.py: its driver and its renderer.
_RUNS = {
    "search": (_SEARCH, f"{_SHOW}:print_search"),
    "metric-search": (_SEARCH, f"{_SHOW}:print_metric"),
    "federated": (f"{_JOBS}.federated.driver:FederatedRun", f"{_SHOW}:print_federated"),
    "benchmark": (f"{_JOBS}.benchmark.driver:BenchmarkRun", f"{_SHOW}:print_benchmark"),
}
if set(_RUNS) != set(KIND_RULES):  # a kind added to one table and not the other fails on import
    raise ImportError(f"job kinds without a driver or without spec rules: {sorted(set(_RUNS) ^ set(KIND_RULES))}")
KINDS: dict[str, JobKind] = {name: JobKind(rules, *_RUNS[name]) for name, rules in KIND_RULES.items()}


def job_kind(name: str) -> JobKind:
    """The kind called ``name``; ValueError naming the kinds there are."""
    if name not in KINDS:
        raise ValueError(f"unknown job kind {name!r}; choose one of {', '.join(KINDS)}")
    return KINDS[name]
