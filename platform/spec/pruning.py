"""The ``pruning:`` section of a job spec: target, metric, granularity, allocation, per-layer bounds.

Checked without torch: metric names and formulas through ``workers.metric_names``, granularities through
``workers.granularity``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from prunehive.platform.spec.fields import Strict, one_of
from prunehive.search.allocations import ALLOCATIONS
from prunehive.workers.granularity import Granularity
from prunehive.workers.metric_names import NEEDS_GRADIENTS, check_metric_name

# The strategies whose proposals map onto a structured search's per-sublayer level grids unchanged.
STRUCTURED_STRATEGIES = ("evopress", "random", "evolution", "bayesian")

PlanName = Literal["fixed", "progressive", "heterogeneous", "fedtiny", "hidenseek", "feddst", "prunefl", "autoflip"]


class RecoverySpec(Strict):
    """Healing of a structured search's best candidate and baselines alike, once the search ends."""

    steps: int = Field(..., ge=1, description="Optimiser steps on the calibration batches.")
    lr: float | None = Field(None, gt=0.0, description="Learning rate (default: a tenth of the task's).")
    distill: Literal["kl", "none"] = Field(
        "kl", description="kl: match the dense model's next-token distributions; none: the task's own loss."
    )
    baselines: bool = Field(
        True,
        description="Heal the baselines too (the default: the comparison stays fair); false heals the best only, "
        "e.g. for a second search whose baselines were healed, at the same budget and seed, by the first.",
    )


class PruningSpec(Strict):
    sparsity: float | None = Field(None, ge=0.0, lt=1.0, description="Target sparsity (parameter-weighted).")
    flops_budget: float | None = Field(None, gt=0.0, le=1.0, description="Keep this fraction of the FLOPs instead.")
    latency_budget: float | None = Field(
        None, gt=0.0, le=1.0, description="Penalise candidates slower than this fraction of dense latency."
    )
    latency_margin: float = Field(
        0.05,
        ge=0.0,
        lt=0.5,
        description="head/block/structured searches under latency_budget: the search and its heuristics are "
        "placed this much faster than the budget (a speed-up of 1/latency_budget times 1 + margin), and the best "
        "must still meet the budget itself when timed again; a second timing of one model on a shared CPU reads a "
        "few percent apart, so a result placed on the budget measures under it about half the time.",
    )
    params_budget: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="head/block/structured searches: every candidate keeps at most this fraction of the dense "
        "model's parameters (embeddings and head included), an exact constraint beside sparsity and latency_budget.",
    )
    metric: str = "magnitude"
    granularity: str = "unstructured"
    per_row: bool = Field(
        False,
        description=(
            "unstructured: compare weights within each output row (the Wanda paper's rule, and locuslab/wanda's "
            "prune_wanda) instead of across the whole layer (the default, kept on purpose: it scores better on "
            "code-lm, see the README's heuristics table). N:M and channel ignore it. prune --json, run summaries "
            "and MLflow params report the effective value (per_row) and the rule in words (rule)."
        ),
    )
    min_density: float = Field(0.01, ge=0.0, lt=1.0, description="Every layer keeps at least this fraction.")
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict, description="Per-layer (min, max) sparsity.")
    allocation: str | dict[str, float] = Field(
        "uniform", description="metric-search: the fixed allocation, a heuristic name or per-layer sparsities."
    )
    recovery_steps: int = Field(0, ge=0)
    recovery: RecoverySpec | None = Field(
        None, description="head/block/structured searches: fine-tune the best and the baselines at the end."
    )
    calibration_batches: int = Field(8, ge=1)
    solver: Literal["mask", "sparsegpt"] = Field(
        "mask", description="mask: zero weights by the metric's ranking; sparsegpt: prune and update the rest (OBS)."
    )
    levels: list[float] = Field(
        default_factory=lambda: [round(0.05 * i, 2) for i in range(20)],
        description="The sparsities each layer is pruned at once in the level database (ascending, in [0, 1)).",
    )
    plan: PlanName | None = Field(
        None,
        description=(
            "federated: fixed masks, a sparsity ramp, nested client tiers (default fixed), or a named algorithm "
            "(fedtiny, hidenseek, feddst, prunefl, autoflip; see workers/federated/plan_<name>.py)."
        ),
    )
    from_job: str | None = Field(
        None, description="federated plan fixed: use the best allocation of this finished search job (id or prefix)."
    )

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        return check_metric_name(v)  # a formula's error points at the offending token

    @field_validator("allocation")
    @classmethod
    def _allocation(cls, v: str | dict[str, float]) -> str | dict[str, float]:
        if isinstance(v, str):
            return one_of(v, ALLOCATIONS)
        for name, value in v.items():
            if not 0.0 <= value < 1.0:
                raise ValueError(f"sparsity of layer {name!r} is {value}, outside [0, 1)")
        return v

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[float]) -> list[float]:
        if not v or any(not 0.0 <= x < 1.0 for x in v) or any(a >= b for a, b in zip(v, v[1:], strict=False)):
            raise ValueError(f"levels must be strictly ascending sparsities in [0, 1), got {v}")
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
        if self.solver == "sparsegpt" and self.granularity == "channel":
            raise ValueError("solver sparsegpt prunes unstructured or N:M, not channel")
        if self.solver == "sparsegpt" and self.metric in NEEDS_GRADIENTS:
            raise ValueError(f"metric {self.metric!r} reads gradients; solver sparsegpt ranks by W and X only")
        if self.recovery is not None and not Granularity.parse(self.granularity).structured:
            raise ValueError(
                f"pruning.recovery heals head, block or structured candidates; granularity {self.granularity} "
                "fine-tunes with recovery_steps"
            )
        if self.params_budget is not None and not Granularity.parse(self.granularity).structured:
            raise ValueError(
                f"pruning.params_budget bounds head, block or structured candidates; granularity "
                f"{self.granularity} takes sparsity or flops_budget"
            )
        if self.sparsity is not None and self.flops_budget is not None:
            raise ValueError("give either sparsity or flops_budget, not both")
        if self.sparsity is None and self.flops_budget is None:
            default = Granularity.parse(self.granularity).default_sparsity
            self.sparsity = default if default is not None else 0.5
        return self

    def check_searchable(self, kind: str, strategy: str | None = None) -> None:
        """Jobs that search per-layer sparsities prune unstructured, N:M or channel; the decoder units
        (``head``, ``block``, ``structured``) are searched by ``kind: search`` with the strategies that
        take a space of per-sublayer level grids, and are otherwise pruned once by ``prunehive prune``."""
        if not Granularity.parse(self.granularity).structured:
            return
        if kind != "search" or strategy not in STRUCTURED_STRATEGIES:
            raise ValueError(
                f"pruning.granularity: {self.granularity} is searched by kind search with strategy "
                f"{', '.join(STRUCTURED_STRATEGIES)} (or pruned once with `prunehive prune --granularity "
                f"{self.granularity}`); not kind {kind} with strategy {strategy}"
            )
        if self.flops_budget is not None:
            raise ValueError(f"pruning.flops_budget: granularity {self.granularity} searches under sparsity")
        if self.metric not in ("magnitude", "activation", "taylor"):
            raise ValueError(f"pruning.metric {self.metric!r}: structured units are scored by magnitude or taylor")
        if self.recovery_steps:
            raise ValueError(f"pruning.recovery_steps: granularity {self.granularity} candidates are not fine-tuned")

    @property
    def budget(self) -> Literal["params", "flops"]:
        return "flops" if self.flops_budget is not None else "params"

    @property
    def target(self) -> float:
        return 1.0 - self.flops_budget if self.flops_budget is not None else float(self.sparsity or 0.0)
