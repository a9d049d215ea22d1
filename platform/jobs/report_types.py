"""A benchmark's and a federated job's summaries as typed objects (a search's are in ``summary_types``).

As there, ``to_dict`` gives the JSON the store, MLflow, ``summary.json`` and ``run --json`` hold, keys in
their established order, and ``from_dict`` reads it back. No torch or Ray.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, TypeAlias, TypeVar

from prunehive.platform.jobs.summary_types import SearchSummary, entries_from_dict, entries_to_dict, rule_to_dict
from prunehive.workers.contracts import Entry, Failed, entry_from_dict
from prunehive.workers.quality import Quality

R = TypeVar("R", bound="Row")


class Row:
    """A flat JSON row (a dataclass): its fields in order, as its keys."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any]) -> R:
        """A field with a default was added later: JSON stored before it reads as the default."""
        values = {f.name: data[f.name] if f.default is MISSING else data.get(f.name, f.default) for f in fields(cls)}
        return cls(**values)


@dataclass(frozen=True)
class TableRow(Row):
    """One line of a benchmark's table: a strategy at a target (mean and std over seeds), or a heuristic
    (``kind`` heuristic: one deterministic value, no std, no evaluations)."""

    target: float | None
    name: str
    kind: str  # "strategy" or "heuristic"
    seeds: int
    evaluations: float | None
    achieved_sparsity: float
    validation_mean: float
    validation_std: float | None
    test_mean: float
    test_std: float | None
    test_values: list[float]


@dataclass(frozen=True)
class RunRow(Row):
    """One (target, strategy, seed) search job of a benchmark and its best candidate's scores."""

    target: float | None
    strategy: str
    seed: int
    job_id: str
    mlflow_run_id: str
    trials: int
    achieved_sparsity: float
    validation: float
    test: float
    layers: dict[str, float]


@dataclass(frozen=True)
class BenchmarkSummary:
    """A benchmark's result: its table and runs, the best single run at the first target with its heuristics
    (in a search summary's shape), each target's heuristics and the dense model. ``job_id`` to ``timing`` are
    set once the report is written."""

    task: str
    quality: Quality
    metric: str
    granularity: str
    per_row: bool | None
    rule: str | None
    budget: int
    seeds: list[int]
    strategies: list[str]
    targets: list[float | None]
    trials: int
    table: list[TableRow]
    runs: list[RunRow]
    best: Entry
    baselines: dict[str, Entry | Failed]
    baselines_by_target: dict[str, dict[str, Entry | Failed]]
    dense: Entry | Failed | None  # cells run before the dense model was reported have none
    job_id: str | None = None
    status: str | None = None
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None
    report: str | None = None
    timing: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "benchmark",
            "task": self.task,
            "quality": self.quality.name,
            "higher_is_better": self.quality.higher_is_better,
            "metric": self.metric,
            "granularity": self.granularity,
            **rule_to_dict(self.per_row, self.rule),
            "budget": self.budget,
            "seeds": list(self.seeds),
            "strategies": list(self.strategies),
            "targets": list(self.targets),
            "trials": self.trials,
            "table": [r.to_dict() for r in self.table],
            "runs": [r.to_dict() for r in self.runs],
            "best": self.best.to_dict(),
            "baselines": entries_to_dict(self.baselines),
            "baselines_by_target": {t: entries_to_dict(b) for t, b in self.baselines_by_target.items()},
            "dense": None if self.dense is None else self.dense.to_dict(),
        }
        done = ("job_id", "status", "mlflow_run_id", "tracking_uri", "report", "timing")
        out.update({k: getattr(self, k) for k in done if getattr(self, k) is not None})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkSummary:
        dense = data.get("dense")
        return cls(
            task=str(data["task"]),
            quality=Quality(str(data["quality"]), bool(data["higher_is_better"])),
            metric=str(data["metric"]),
            granularity=str(data["granularity"]),
            per_row=data.get("per_row"),
            rule=data.get("rule"),
            budget=int(data["budget"]),
            seeds=[int(s) for s in data["seeds"]],
            strategies=[str(s) for s in data["strategies"]],
            targets=list(data["targets"]),
            trials=int(data["trials"]),
            table=[TableRow.from_dict(r) for r in data["table"]],
            runs=[RunRow.from_dict(r) for r in data["runs"]],
            best=Entry.from_dict(data["best"]),
            baselines=entries_from_dict(data["baselines"]),
            baselines_by_target={str(t): entries_from_dict(b) for t, b in data["baselines_by_target"].items()},
            dense=None if dense is None else entry_from_dict(dense),
            **{k: data.get(k) for k in ("job_id", "status", "mlflow_run_id", "tracking_uri", "report", "timing")},
        )


@dataclass(frozen=True)
class Tier(Row):
    """One tier of a heterogeneous federated plan at the last round."""

    target: float
    sparsity: float
    test_accuracy: float
    layers: dict[str, float]


@dataclass(frozen=True)
class Traffic(Row):
    """What a federated simulation sent, summed over its rounds (and its failed client replies), and what its
    clients' local training cost."""

    bytes_up: int
    bytes_down: int
    dense_bytes_up: int
    dense_bytes_down: int
    failures: int
    client_flops: int = 0  # local training FLOPs, all clients and rounds (sparse-aware; see ``client_cost``)
    peak_client_bytes: int = 0  # the largest client's measured peak training memory


@dataclass(frozen=True)
class FederatedFinal:
    """The global model after the last round (with tiers: the most-pruned tier's, every tier in ``tiers``;
    with one target: its per-layer sparsity in ``layers``)."""

    test_accuracy: float
    sparsity: float
    client_accuracy: float
    tiers: list[Tier] = field(default_factory=list)
    layers: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "test_accuracy": self.test_accuracy,
            "sparsity": self.sparsity,
            "client_accuracy": self.client_accuracy,
        }
        if self.tiers:
            out["tiers"] = [t.to_dict() for t in self.tiers]
        if self.layers is not None:
            out["layers"] = self.layers
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederatedFinal:
        tiers = [Tier.from_dict(t) for t in data.get("tiers") or []]
        return cls(data["test_accuracy"], data["sparsity"], data["client_accuracy"], tiers, data.get("layers"))


@dataclass(frozen=True)
class DenseReference:
    """Dense FedAvg with the same seed: its final accuracies and what it sent."""

    test_accuracy: float
    client_accuracy: float
    traffic: Traffic

    def to_dict(self) -> dict[str, Any]:
        final = {"test_accuracy": self.test_accuracy, "client_accuracy": self.client_accuracy}
        return {"final": final, **self.traffic.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DenseReference:
        final = data["final"]
        return cls(final["test_accuracy"], final["client_accuracy"], Traffic.from_dict(data))


@dataclass(frozen=True)
class FederatedSummary:
    """A federated job's result: the final global model, the traffic against dense FedAvg's, the per-round
    table (``rounds``: one JSON row per round, as ``report.history_rows`` writes it) and, where asked for,
    the dense reference and the accuracy gap to it."""

    job_id: str
    status: str
    task: str
    plan: str
    per_row: bool | None
    rule: str | None
    final: FederatedFinal
    traffic: Traffic
    uplink_reduction: float
    rounds: list[dict[str, Any]]
    mlflow_run_id: str
    tracking_uri: str
    timing: dict[str, float] | None = None
    dense_reference: DenseReference | None = None
    accuracy_gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "job_id": self.job_id,
            "kind": "federated",
            "status": self.status,
            "task": self.task,
            "plan": self.plan,
            **rule_to_dict(self.per_row, self.rule),
            "final": self.final.to_dict(),
            **self.traffic.to_dict(),
            "uplink_reduction": self.uplink_reduction,
            "rounds": self.rounds,
            "mlflow_run_id": self.mlflow_run_id,
            "tracking_uri": self.tracking_uri,
        }
        if self.timing is not None:
            out["timing"] = self.timing
        if self.dense_reference is not None:
            out["dense_reference"] = self.dense_reference.to_dict()
        if self.accuracy_gap is not None:
            out["accuracy_gap"] = self.accuracy_gap
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FederatedSummary:
        dense = data.get("dense_reference")
        return cls(
            job_id=str(data["job_id"]),
            status=str(data["status"]),
            task=str(data["task"]),
            plan=str(data["plan"]),
            per_row=data.get("per_row"),
            rule=data.get("rule"),
            final=FederatedFinal.from_dict(data["final"]),
            traffic=Traffic.from_dict(data),
            uplink_reduction=float(data["uplink_reduction"]),
            rounds=list(data["rounds"]),
            mlflow_run_id=str(data["mlflow_run_id"]),
            tracking_uri=str(data["tracking_uri"]),
            timing=data.get("timing"),
            dense_reference=None if dense is None else DenseReference.from_dict(dense),
            accuracy_gap=data.get("accuracy_gap"),
        )


Summary: TypeAlias = SearchSummary | BenchmarkSummary | FederatedSummary


def summary_from_dict(data: dict[str, Any], kind: str | None = None) -> Summary:
    """A summary's JSON as its kind's type (``kind`` defaults to the summary's own; a search's names none)."""
    kind = kind or data.get("kind") or "search"
    if kind == "benchmark":
        return BenchmarkSummary.from_dict(data)
    if kind == "federated":
        return FederatedSummary.from_dict(data)
    return SearchSummary.from_dict(data)
