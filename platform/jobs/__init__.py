"""The job kinds: one entry each, holding its spec section, its cross-field rules, its driver and its
summary renderer. A new kind is one folder under ``platform/jobs/`` plus one line in :data:`KINDS`
(and, when it has its own ``<section>:`` in the spec, that section as a field of ``JobSpec``).

Drivers and renderers are named by import path and loaded on use, so importing this registry (as spec
validation, the job store and the API server do) loads neither Ray, torch, MLflow nor matplotlib.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from prunehive.platform.jobs.benchmark.spec import BenchmarkOptions, check_benchmark
from prunehive.platform.jobs.federated.spec import FederatedOptions, check_federated
from prunehive.platform.spec.search import check_metric_search, check_search

if TYPE_CHECKING:
    from prunehive.platform.jobs.base import JobRunner
    from prunehive.platform.spec.job import JobSpec


def _load(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class JobKind:
    """One kind of job. ``checks`` run in order after the spec's fields validate; each raises ValueError
    naming the field. ``named_by`` is what a job is named after when the spec gives no name."""

    name: str
    driver: str  # "module:Class" of a JobRun subclass
    summary: str  # "module:function" printing a finished job's summary for people
    checks: tuple[Callable[[JobSpec], None], ...] = ()
    section: str | None = None  # the spec field holding the kind's own options
    options: type[BaseModel] | None = None  # that field's model
    named_by: Literal["strategy", "kind"] = "kind"

    def driver_class(self) -> Callable[..., JobRunner]:
        """The driver: called as ``(store, job_id, ray_address=..., show_progress=...)``."""
        cls: Callable[..., JobRunner] = _load(self.driver)
        return cls

    def print_summary(self, result: dict[str, Any]) -> None:
        _load(self.summary)(result)

    def default_name(self, spec: JobSpec) -> str:
        return f"{spec.task}-{spec.strategy if self.named_by == 'strategy' else self.name}"


_JOBS = "prunehive.platform.jobs"
_SHOW = "prunehive.platform.cli.summaries"
_SEARCH = f"{_JOBS}.search.driver:SearchRun"

# One line per kind: name, driver, renderer, cross-field checks, [own spec section and its model].
_ALL = (
    JobKind("search", _SEARCH, f"{_SHOW}:print_search", (check_search,), named_by="strategy"),
    JobKind("metric-search", _SEARCH, f"{_SHOW}:print_metric", (check_metric_search,), named_by="strategy"),
    JobKind(
        "federated",
        f"{_JOBS}.federated.driver:FederatedRun",
        f"{_SHOW}:print_federated",
        (check_federated, check_search),
        "federated",
        FederatedOptions,
    ),
    JobKind(
        "benchmark",
        f"{_JOBS}.benchmark.driver:BenchmarkRun",
        f"{_SHOW}:print_benchmark",
        (check_benchmark, check_search),
        "benchmark",
        BenchmarkOptions,
    ),
)
KINDS: dict[str, JobKind] = {k.name: k for k in _ALL}


def job_kind(name: str) -> JobKind:
    """The kind called ``name``; ValueError naming the kinds there are."""
    if name not in KINDS:
        raise ValueError(f"unknown job kind {name!r}; choose one of {', '.join(KINDS)}")
    return KINDS[name]
