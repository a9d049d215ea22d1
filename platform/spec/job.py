"""The job spec: one YAML schema, validated by pydantic, with defaults for everything but ``kind``.

Errors name the field and the allowed values, e.g.
``search.strategy: 'evolve' is not one of evolution, nsga2, bayesian, rl, random``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prunehive.platform.jobs.benchmark.spec import BenchmarkOptions, check_benchmark
from prunehive.platform.jobs.federated.spec import FederatedOptions, check_federated
from prunehive.search.allocations import ALLOCATIONS
from prunehive.search.registry import STRATEGIES
from prunehive.workers.masks import Granularity
from prunehive.workers.metrics import EXPRESSION_PREFIX, METRICS, get_metric

METRIC_BASELINES = ("magnitude", "wanda", "snip")  # what a metric search is compared with


class SpecError(ValueError):
    """A spec that cannot run; the message names the field."""


def _one_of(value: str, allowed: list[str] | tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PruningSpec(Strict):
    sparsity: float | None = Field(None, ge=0.0, lt=1.0, description="Target sparsity (parameter-weighted).")
    flops_budget: float | None = Field(None, gt=0.0, le=1.0, description="Keep this fraction of the FLOPs instead.")
    metric: str = "magnitude"
    granularity: str = "unstructured"
    per_row: bool = False
    min_density: float = Field(0.01, ge=0.0, lt=1.0, description="Every layer keeps at least this fraction.")
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict, description="Per-layer (min, max) sparsity.")
    allocation: str | dict[str, float] = Field(
        "uniform", description="metric-search: the fixed allocation, a heuristic name or per-layer sparsities."
    )
    recovery_steps: int = Field(0, ge=0)
    calibration_batches: int = Field(8, ge=1)
    plan: Literal["fixed", "progressive", "heterogeneous"] | None = Field(
        None, description="federated: fixed masks, a sparsity ramp, or nested client tiers (default fixed)."
    )
    from_job: str | None = Field(
        None, description="federated plan fixed: use the best allocation of this finished search job (id or prefix)."
    )

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v.startswith(EXPRESSION_PREFIX):
            get_metric(v)  # parses the expression; its error points at the offending token
            return v
        return _one_of(v, [*METRICS, f"{EXPRESSION_PREFIX}<expression>"])

    @field_validator("allocation")
    @classmethod
    def _allocation(cls, v: str | dict[str, float]) -> str | dict[str, float]:
        if isinstance(v, str):
            return _one_of(v, list(ALLOCATIONS))
        for name, value in v.items():
            if not 0.0 <= value < 1.0:
                raise ValueError(f"sparsity of layer {name!r} is {value}, outside [0, 1)")
        return v

    @field_validator("granularity")
    @classmethod
    def _granularity(cls, v: str) -> str:
        Granularity.parse(v)
        return v

    @model_validator(mode="after")
    def _budget(self) -> PruningSpec:
        if self.from_job is not None and self.plan not in (None, "fixed"):
            raise ValueError(f"from_job gives a fixed allocation; it does not combine with plan {self.plan!r}")
        if self.sparsity is not None and self.flops_budget is not None:
            raise ValueError("give either sparsity or flops_budget, not both")
        if self.sparsity is None and self.flops_budget is None:
            default = Granularity.parse(self.granularity).default_sparsity
            self.sparsity = default if default is not None else 0.5
        return self

    @property
    def budget(self) -> Literal["params", "flops"]:
        return "flops" if self.flops_budget is not None else "params"

    @property
    def target(self) -> float:
        return 1.0 - self.flops_budget if self.flops_budget is not None else float(self.sparsity or 0.0)


class SearchOptions(Strict):
    strategy: str | None = Field(None, description="Default: evolution (search), gp-metric (metric-search).")
    budget: int = Field(100, ge=1, description="Evaluations.")
    minutes: float | None = Field(None, gt=0, description="Wall-clock limit; the search stops asking after it.")
    seed: int = 0
    objectives: list[str] = Field(
        default_factory=lambda: ["quality"], description="quality, and for nsga2 sparsity or flops."
    )
    options: dict[str, Any] = Field(default_factory=dict, description="The strategy's own keyword arguments.")
    baselines: list[str] = Field(default_factory=lambda: list(ALLOCATIONS))
    eval_timeout: float | None = Field(
        None, gt=0, description="Seconds per candidate; a slower evaluation fails (metric-search default: 120)."
    )
    warm_start: bool = Field(True, description="evolution and bayesian start from the baselines' allocations.")

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str | None) -> str | None:
        return None if v is None else _one_of(v, list(STRATEGIES))

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        for item in v:
            _one_of(item, ["quality", "sparsity", "flops"])
        if not v or v[0] != "quality":
            raise ValueError("the first objective must be 'quality'")
        return v

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: list[str]) -> list[str]:
        for item in v:
            _one_of(item, [*ALLOCATIONS, *METRIC_BASELINES])
        return v

    @model_validator(mode="after")
    def _nsga2(self) -> SearchOptions:
        if self.strategy == "nsga2" and len(self.objectives) == 1:
            self.objectives = ["quality", "sparsity"]
        if self.strategy != "nsga2" and len(self.objectives) > 1:
            raise ValueError(f"strategy {self.strategy!r} optimises one objective; use nsga2 for two")
        return self


class Resources(Strict):
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    batch: int = Field(0, ge=0, description="Candidates per actor call; 0 picks one from the evaluation time.")


class Tracking(Strict):
    mlflow_uri: str | None = None
    experiment: str | None = None


class JobSpec(Strict):
    kind: Literal["search", "metric-search", "federated", "benchmark"] = "search"
    name: str | None = None
    task: str = "digits-mlp"
    seed: int = 0
    pruning: PruningSpec = Field(default_factory=lambda: PruningSpec())
    search: SearchOptions = Field(default_factory=lambda: SearchOptions())
    resources: Resources = Field(default_factory=lambda: Resources())
    tracking: Tracking = Field(default_factory=Tracking)
    federated: FederatedOptions = Field(default_factory=lambda: FederatedOptions())
    benchmark: BenchmarkOptions = Field(default_factory=lambda: BenchmarkOptions())

    @model_validator(mode="after")
    def _strategy_for_kind(self) -> JobSpec:
        if self.kind == "federated":
            check_federated(self)
        elif self.kind == "benchmark":
            check_benchmark(self)
        chosen = self.search.strategy
        if self.kind == "metric-search":
            if chosen not in (None, "gp-metric"):
                raise ValueError(f"search.strategy: metric-search uses gp-metric, not {chosen!r}")
            self.search.strategy = "gp-metric"
            if self.search.eval_timeout is None:
                self.search.eval_timeout = 120.0
            if self.search.baselines == list(ALLOCATIONS):
                self.search.baselines = list(METRIC_BASELINES)
            allowed: tuple[str, ...] = METRIC_BASELINES
        else:
            allowed = ALLOCATIONS
            if chosen == "gp-metric":
                raise ValueError("search.strategy: gp-metric searches metrics; use kind: metric-search")
            if chosen is None:
                self.search.strategy = "evolution"
        for item in self.search.baselines:
            if item not in allowed:
                raise ValueError(f"search.baselines: {item!r} is not one of {', '.join(allowed)} for kind {self.kind}")
        return self

    @property
    def strategy(self) -> str:
        return self.search.strategy or "evolution"

    @property
    def display_name(self) -> str:
        return self.name or f"{self.task}-{self.strategy if self.kind in ('search', 'metric-search') else self.kind}"

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.display_name


def _format(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "literal_error":
        msg = f"{first.get('input')!r} {msg.lower()}"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {msg}{more}"


def parse_spec(data: Any) -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError("spec: expected a mapping of fields (kind, task, pruning, search, ...)")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format(exc)) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a YAML (or JSON) spec file."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"spec file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_spec(data)
