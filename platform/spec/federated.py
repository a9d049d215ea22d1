"""The ``federated:`` section of a job spec (``kind: federated``): clients, rounds, partitioning, tiers.

Cross-field rules live in :func:`check_federated`, which the job spec calls for ``kind: federated``;
every error names its field (``federated.clients: ...``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prunehive.workers.tasks.spec import HFTaskSpec

if TYPE_CHECKING:
    from prunehive.platform.spec.job import JobSpec

PARTITION_KINDS = ("iid", "dirichlet", "shards")
NAMED_PLANS = ("fedtiny", "hidenseek", "feddst", "prunefl", "autoflip")  # as workers.federated.plans.NAMED_PLANS
BUDGET_KEYS = ("flops", "memory_mb")
PERPLEXITY_TASKS = ("code-lm", "code-lm-deep")


class FederatedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    clients: int = Field(10, ge=2, le=1000, description="Simulated clients (Flower SuperNodes).")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="Fraction of clients sampled per round.")
    rounds: int = Field(20, ge=1, le=10_000)
    local_epochs: int = Field(3, ge=1, description="Passes over its own data per client per round.")
    batch_size: int = Field(32, ge=1)
    lr: float | None = Field(None, gt=0.0, description="Client Adam learning rate (default: the task's).")
    partition: str | dict[str, float] = Field(
        "iid", description="'iid', {dirichlet: alpha} or {shards: shards per client} (flwr-datasets)."
    )
    seed: int = 0
    dense_reference: bool = Field(False, description="Also run dense FedAvg with the same seed, for comparison.")
    tiers: list[float] = Field(
        default_factory=list, description="heterogeneous plan: target sparsity of each client tier, e.g. [0.5, 0.8]."
    )
    ramp_rounds: int | None = Field(
        None, ge=1, description="progressive/heterogeneous: rounds to reach the target (default: a quarter)."
    )
    round_timeout: float = Field(600.0, gt=0, description="Seconds the server waits for a round's replies.")
    eval_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="search.evaluation federated: fraction of clients each candidate is scored on (a staged "
        "search's last stage; earlier stages in proportion to their samples).",
    )
    recovery_rounds: int = Field(
        0,
        ge=0,
        description="search.evaluation federated: rounds of sparse FedAvg each candidate gets before scoring "
        "(fraction of the clients per round, local_epochs each, at lr or a tenth of the task's).",
    )
    client_budget: dict[str, float] = Field(
        default_factory=dict,
        description="fedtiny: per-client bound, {flops: fraction of dense training FLOPs} or {memory_mb: peak MB}.",
    )
    mask_interval: int | None = Field(
        None, ge=1, description="fedtiny, feddst, prunefl: rounds between mask re-adjustments (default: a fifth)."
    )

    @field_validator("client_budget")
    @classmethod
    def _budget(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            return v
        if len(v) != 1 or next(iter(v)) not in BUDGET_KEYS:
            raise ValueError(f"{v!r}: give exactly one of {{flops: fraction}} or {{memory_mb: megabytes}}")
        key, value = next(iter(v.items()))
        if value <= 0 or (key == "flops" and value > 1):
            raise ValueError(f"{key} {value} is outside {'(0, 1]' if key == 'flops' else '(0, inf)'}")
        return v

    @field_validator("partition")
    @classmethod
    def _partition(cls, v: str | dict[str, float]) -> str | dict[str, float]:
        if isinstance(v, str):
            if v != "iid":
                raise ValueError(f"{v!r} is not one of iid, {{dirichlet: alpha}}, {{shards: n}}")
            return v
        if len(v) != 1 or next(iter(v)) not in ("dirichlet", "shards"):
            raise ValueError(f"{v!r}: give exactly one of {{dirichlet: alpha}} or {{shards: n}}")
        kind, value = next(iter(v.items()))
        if value <= 0:
            raise ValueError(f"{kind} must be positive, got {value}")
        if kind == "shards" and value != int(value):
            raise ValueError(f"shards must be a whole number of shards per client, got {value}")
        return v

    @field_validator("tiers")
    @classmethod
    def _tiers(cls, v: list[float]) -> list[float]:
        for s in v:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"tier sparsity {s} is outside [0, 1)")
        if len(set(v)) != len(v):
            raise ValueError("tier sparsities must differ")
        return sorted(v)

    @property
    def partition_kind(self) -> str:
        return self.partition if isinstance(self.partition, str) else next(iter(self.partition))

    @property
    def partition_value(self) -> float:
        return 0.0 if isinstance(self.partition, str) else float(next(iter(self.partition.values())))


def check_federated(spec: JobSpec) -> None:
    """Cross-field checks for ``kind: federated``; raises ValueError naming the field."""
    fed, pruning = spec.federated, spec.pruning
    if spec.task in PERPLEXITY_TASKS:
        raise ValueError(f"task: federated runs need a classification task; {spec.task} reports perplexity")
    if isinstance(spec.task, HFTaskSpec) and spec.task.kind != "image-classification":
        raise ValueError(
            f"task: federated runs need a classification task; hf: {spec.task.label} is a causal language model"
            " (perplexity); federated jobs take an image classifier"
        )
    if int(fed.clients * fed.fraction) < 1:
        raise ValueError(f"federated.fraction: {fed.fraction} of {fed.clients} clients samples no client")
    if pruning.flops_budget is not None:
        raise ValueError("pruning.flops_budget: federated plans take a parameter sparsity (pruning.sparsity)")
    # Every metric and granularity works: clients and server use the workers' pruning stack.
    plan = pruning.plan or "fixed"
    pruning.plan = plan
    if not isinstance(pruning.allocation, str) and plan != "fixed":
        raise ValueError("pruning.allocation: per-layer sparsities are for plan: fixed")
    if plan == "heterogeneous":
        if len(fed.tiers) < 2:
            raise ValueError("federated.tiers: the heterogeneous plan needs at least two tier sparsities")
        if len(fed.tiers) > fed.clients:
            raise ValueError(f"federated.tiers: {len(fed.tiers)} tiers for {fed.clients} clients")
    elif fed.tiers:
        raise ValueError(f"federated.tiers: tiers are for plan: heterogeneous, not {plan}")
    check_named_plan(spec, plan)
    if fed.ramp_rounds is not None and fed.ramp_rounds > fed.rounds:
        raise ValueError(f"federated.ramp_rounds: {fed.ramp_rounds} is more than federated.rounds ({fed.rounds})")


def check_named_plan(spec: JobSpec, plan: str) -> None:
    """The named algorithms' own rules: each prunes single weights by its own criterion (autoflip also
    masks whole channels itself), and only fedtiny reads a client budget."""
    fed, pruning = spec.federated, spec.pruning
    if fed.client_budget and plan != "fedtiny":
        raise ValueError(f"federated.client_budget: a client budget is for plan: fedtiny, not {plan}")
    if fed.mask_interval is not None and plan not in ("fedtiny", "feddst", "prunefl"):
        raise ValueError(f"federated.mask_interval: mask re-adjustment is for fedtiny, feddst and prunefl, not {plan}")
    if plan not in NAMED_PLANS:
        return
    if plan == "hidenseek" and pruning.granularity != "unstructured":
        raise ValueError(
            f"pruning.granularity: hidenseek learns a sign for each kept weight; it needs unstructured,"
            f" not {pruning.granularity}"
        )
    if pruning.granularity != "unstructured":
        raise ValueError(
            f"pruning.granularity: {plan} chooses its own structure; it takes unstructured, not {pruning.granularity}"
        )
    if pruning.allocation != "uniform" or pruning.from_job:
        raise ValueError(f"pruning.allocation: {plan} allocates sparsity across layers by its own rule")
