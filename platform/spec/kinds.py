"""What the spec needs of each job kind: its name, its own ``<section>:`` and that section's model, its
cross-field rules, and what a job is named after. The drivers and renderers that go with these names
live in the job-kind registry (``platform/jobs/__init__.py``), which builds on this table; nothing here
imports the jobs, so the spec and the job store read the kinds without loading a driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from prunehive.platform.spec.benchmark import BenchmarkOptions, check_benchmark
from prunehive.platform.spec.federated import FederatedOptions, check_federated
from prunehive.platform.spec.search import check_metric_search, check_search

if TYPE_CHECKING:
    from prunehive.platform.spec.job import JobSpec


@dataclass(frozen=True)
class KindRules:
    """One kind's spec rules. ``checks`` run in order after the spec's fields validate; each raises
    ValueError naming the field. ``named_by`` is what a job is named after when the spec gives no name."""

    name: str
    checks: tuple[Callable[[JobSpec], None], ...] = ()
    section: str | None = None  # the spec field holding the kind's own options
    options: type[BaseModel] | None = None  # that field's model
    named_by: Literal["strategy", "kind"] = "kind"

    def default_name(self, spec: JobSpec) -> str:
        return f"{spec.task}-{spec.strategy if self.named_by == 'strategy' else self.name}"


# One line per kind: name, cross-field checks, [own spec section and its model], [what names a job].
_ALL = (
    KindRules("search", (check_search,), named_by="strategy"),
    KindRules("metric-search", (check_metric_search,), named_by="strategy"),
    KindRules("federated", (check_federated, check_search), "federated", FederatedOptions),
    KindRules("benchmark", (check_benchmark, check_search), "benchmark", BenchmarkOptions),
)
KIND_RULES: dict[str, KindRules] = {k.name: k for k in _ALL}
