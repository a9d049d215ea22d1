"""The ``search:`` section of a job spec, and the rules of the two search kinds.

Every kind reads ``search:`` (a benchmark takes its budget from it, a federated job its seed-free
defaults), so the section lives here; :func:`check_search` and :func:`check_metric_search` are the
cross-field rules the kinds' table (``spec/kinds.py``) runs for ``search`` and ``metric-search``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from prunehive.platform.spec.federated_search import check_federated_evaluation
from prunehive.platform.spec.fields import Strict, one_of
from prunehive.search.allocations import ALLOCATIONS, HEURISTICS
from prunehive.search.halving import check_stages
from prunehive.search.registry import OPTIONS, STRATEGIES, check_options
from prunehive.search.structured_space import STRUCTURED_BASELINES
from prunehive.workers.granularity import STRUCTURED, Granularity

if TYPE_CHECKING:
    from prunehive.platform.spec.job import JobSpec

METRIC_BASELINES = ("magnitude", "wanda", "snip")  # what a metric search is compared with


class LatencyOptions(Strict):
    """How workers time candidates when a job optimises or bounds latency."""

    batch: int = Field(1, ge=1, description="Rows per timed forward pass.")
    repeats: int = Field(30, ge=1, description="Timed passes; the median counts.")
    warmup: int = Field(3, ge=0, description="Untimed passes first.")


class SearchOptions(Strict):
    strategy: str | None = Field(None, description="Default: evolution (search), gp-metric (metric-search).")
    budget: int = Field(100, ge=1, description="Evaluations.")
    minutes: float | None = Field(None, gt=0, description="Wall-clock limit; the search stops asking after it.")
    seed: int = 0
    objectives: list[str] = Field(
        default_factory=lambda: ["quality"], description="quality, and for nsga2 sparsity, flops or latency."
    )
    latency: LatencyOptions | None = Field(
        None, description="Time every candidate (default {batch: 1, repeats: 30} where latency is asked for)."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="The strategy's own options, checked against its model (search/options.py)."
    )
    baselines: list[str] = Field(default_factory=lambda: list(ALLOCATIONS))
    eval_timeout: float | None = Field(
        None, gt=0, description="Seconds per candidate; a slower evaluation fails (metric-search default: 120)."
    )
    warm_start: bool = Field(True, description="All but random and gp-metric start from the baselines' allocations.")
    fitness: Literal["quality", "kl", "loss"] = Field(
        "quality",
        description="What strategies maximise: validation quality, minus the KL from the dense model, or minus the "
        "validation loss (smoother than a classifier's accuracy on a small split).",
    )
    evaluation: Literal["central", "federated"] = Field(
        "central",
        description="Where candidates are scored: on the task's data, or on Flower clients' data (the "
        "federated: section), with statistics and scores pooled from sums and counts.",
    )
    fidelity: list[int] | None = Field(
        None,
        description="Tokens (or samples) per selection stage, increasing: multi-step selection for evopress and "
        "evolution, successive halving for bayesian and random (not nsga2 or rl).",
    )
    survivors: list[int] | None = Field(None, description="Candidates kept after each stage, decreasing.")
    train_steps: list[int] | None = Field(
        None,
        description="Training-aware selection (DarwinLM), structured granularities only: distillation steps "
        "(KL from the dense model, on the calibration batches) each stage's candidates get before they are "
        "scored, one entry per stage of search.fidelity (one entry without stages).",
    )

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str | None) -> str | None:
        return None if v is None else one_of(v, STRATEGIES)

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[str]) -> list[str]:
        for item in v:
            one_of(item, ["quality", "sparsity", "flops", "latency"])
        if not v or v[0] != "quality":
            raise ValueError("the first objective must be 'quality'")
        return v

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: list[str]) -> list[str]:
        for item in v:
            one_of(item, [*HEURISTICS, *METRIC_BASELINES, *STRUCTURED_BASELINES])
        return v

    @model_validator(mode="after")
    def _stages(self) -> SearchOptions:
        check_stages(self.fidelity, self.survivors)
        return self

    @model_validator(mode="after")
    def _nsga2(self) -> SearchOptions:
        if self.strategy == "nsga2" and len(self.objectives) == 1:
            self.objectives = ["quality", "sparsity"]
        if self.strategy != "nsga2" and len(self.objectives) > 1:
            raise ValueError(f"strategy {self.strategy!r} optimises one objective; use nsga2 for two")
        return self


def _baselines_within(spec: JobSpec, allowed: tuple[str, ...]) -> None:
    for item in spec.search.baselines:
        if item not in allowed:
            raise ValueError(f"search.baselines: {item!r} is not one of {', '.join(allowed)} for kind {spec.kind}")


def check_search(spec: JobSpec) -> None:
    """A search of per-layer sparsities (also what federated and benchmark jobs default to): evolution
    unless named, never the metric search's gp-metric, heuristic allocations as baselines."""
    if spec.search.strategy == "gp-metric":
        raise ValueError("search.strategy: gp-metric searches metrics; use kind: metric-search")
    spec.pruning.check_searchable(spec.kind, spec.search.strategy or "evolution")
    if spec.search.strategy is None:
        spec.search.strategy = "evolution"
    if Granularity.parse(spec.pruning.granularity).structured:  # depth and width heuristics instead
        if spec.search.baselines == list(ALLOCATIONS):
            spec.search.baselines = list(STRUCTURED_BASELINES)
        _baselines_within(spec, STRUCTURED_BASELINES)
    else:
        _baselines_within(spec, tuple(HEURISTICS))
    if spec.search.fidelity is not None and not OPTIONS[spec.search.strategy].multi_fidelity:
        staged = [name for name, model in OPTIONS.items() if model.multi_fidelity]
        raise ValueError(
            f"search.fidelity: strategy {spec.search.strategy!r} has no multi-fidelity selection; "
            f"use one of {', '.join(staged)}"
        )
    spec.search.options = check_options(spec.search.strategy, spec.search.options)
    check_latency(spec)
    check_train_steps(spec)
    check_federated_evaluation(spec)


def check_train_steps(spec: JobSpec) -> None:
    """Training-aware selection heals structured candidates only (an unstructured candidate's recovery is
    ``pruning.recovery_steps``), with one step count per selection stage."""
    steps = spec.search.train_steps
    if steps is None:
        return
    if not Granularity.parse(spec.pruning.granularity).structured:
        raise ValueError(
            f"search.train_steps: training-aware selection needs granularity head, block or structured, "
            f"not {spec.pruning.granularity}"
        )
    stages = len(spec.search.fidelity or [0])
    if len(steps) != stages or any(v < 0 for v in steps):
        raise ValueError(
            f"search.train_steps: give {stages} step count(s) of at least 0, one per stage of search.fidelity; "
            f"got {steps}"
        )


def check_latency(spec: JobSpec) -> None:
    """Latency as an objective or a budget needs a granularity that can run faster than dense: channel
    (a smaller model) or 2:4 (sparse kernels, on a CUDA GPU); anything else only ever measures 1.0x."""
    asked = "latency" in spec.search.objectives or spec.pruning.latency_budget is not None
    if asked and spec.pruning.granularity not in ("channel", "2:4", *STRUCTURED):
        what = "search.objectives: latency" if "latency" in spec.search.objectives else "pruning.latency_budget"
        raise ValueError(
            f"{what} needs granularity channel or 2:4 (or head, block, structured); "
            f"{spec.pruning.granularity} runs the dense kernel"
        )


def check_metric_search(spec: JobSpec) -> None:
    """A metric search runs gp-metric, with a per-candidate timeout, against the built-in metrics."""
    search = spec.search
    spec.pruning.check_searchable(spec.kind)
    if search.strategy not in (None, "gp-metric"):
        raise ValueError(f"search.strategy: metric-search uses gp-metric, not {search.strategy!r}")
    search.strategy = "gp-metric"
    if search.eval_timeout is None:
        search.eval_timeout = 120.0
    if search.baselines == list(ALLOCATIONS):
        search.baselines = list(METRIC_BASELINES)
    _baselines_within(spec, METRIC_BASELINES)
    search.options = check_options("gp-metric", search.options)
    check_latency(spec)
    check_federated_evaluation(spec)
