"""The ``benchmark:`` section of a job spec (``kind: benchmark``): strategies, seeds, sparsities.

A benchmark runs every (sparsity, strategy, seed) as its own search job with the same budget, so
the shared search settings (``search.budget``, ``minutes``, ``eval_timeout``, ``warm_start``) come
from ``search:`` and only what varies between the runs lives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunehive.search.allocations import ALLOCATIONS
from prunehive.search.registry import STRATEGIES, check_options

if TYPE_CHECKING:
    from prunehive.platform.spec.job import JobSpec

DEFAULT_STRATEGIES = ("evolution", "bayesian", "rl", "random")  # one objective each; nsga2 may be added
SEARCH_STRATEGIES = tuple(s for s in STRATEGIES if s != "gp-metric")


def _members(field: str, values: list[str], allowed: tuple[str, ...]) -> list[str]:
    for value in values:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    if len(set(values)) != len(values):
        raise ValueError(f"{field} are listed twice: {values}")
    return values


class BenchmarkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategies: list[str] = Field(
        default_factory=lambda: list(DEFAULT_STRATEGIES), description="Search strategies, each run per seed."
    )
    seeds: int | list[int] = Field(3, description="A count (seeds 0..n-1) or the list of search seeds.")
    sparsities: list[float] | None = Field(None, description="Target sparsities (default: pruning.sparsity).")
    baselines: list[str] = Field(default_factory=lambda: list(ALLOCATIONS), description="Heuristics shown alongside.")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-strategy keyword arguments, e.g. {evolution: {population: 16}}."
    )

    @field_validator("strategies")
    @classmethod
    def _strategies(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one strategy")
        return _members("strategies", v, SEARCH_STRATEGIES)

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: list[str]) -> list[str]:
        return _members("baselines", v, tuple(ALLOCATIONS))

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int) and not 1 <= v <= 100:
            raise ValueError(f"a count of seeds must be between 1 and 100, not {v}")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError("give a non-empty list of distinct seeds")
        return v

    @field_validator("sparsities")
    @classmethod
    def _sparsities(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return v
        if not v or len(set(v)) != len(v):
            raise ValueError("give a non-empty list of distinct sparsities")
        for s in v:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"sparsity {s} is outside [0, 1)")
        return sorted(v)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def check_benchmark(spec: JobSpec) -> None:
    """Cross-field checks for ``kind: benchmark``; raises ValueError naming the field."""
    bench, search = spec.benchmark, spec.search
    if search.strategy is not None and search.strategy not in bench.strategies:
        raise ValueError(f"search.strategy: a benchmark runs benchmark.strategies, and {search.strategy!r} is not one")
    # Set here so the spec stays valid when the stored copy is parsed again (and names read well).
    search.strategy = search.strategy or bench.strategies[0]
    spec.name = spec.name or f"{spec.task}-benchmark"
    if search.options:
        raise ValueError("search.options: a benchmark takes per-strategy options in benchmark.options")
    if len(search.objectives) > 1:
        raise ValueError("search.objectives: a benchmark compares on quality; nsga2 adds sparsity itself")
    for name in bench.options:
        if name not in bench.strategies:
            raise ValueError(f"benchmark.options: {name!r} is not in benchmark.strategies")
        bench.options[name] = check_options(name, bench.options[name], f"benchmark.options.{name}")
    if bench.sparsities is not None and spec.pruning.flops_budget is not None:
        raise ValueError("benchmark.sparsities: give either pruning.flops_budget or benchmark.sparsities")
    if bench.sparsities is None and spec.pruning.flops_budget is None:
        bench.sparsities = [spec.pruning.target]
