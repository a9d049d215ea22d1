"""What crosses the actor boundary: evaluation requests, results, replies and a worker's description.

Plain dataclasses with no torch import, so the driver, the store, the summaries and the API can use
them without loading a model stack. Ray pickles them as they are; ``to_dict``/``from_dict`` are used
only where they leave Python: the job store's JSON columns, MLflow and ``--json`` output. An
:class:`Entry` is a result as a job summary lists it (``platform/jobs/summary_types.py`` holds the summaries).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from prunehive.search.space import Layer
from prunehive.workers.quality import Quality

if TYPE_CHECKING:
    from prunehive.workers.tasks.base import Split

NOT_QUALITY = ("loss", "objective", "kl")  # the other keys of one split's metrics


@dataclass(frozen=True)
class SplitMetrics:
    """One split's scores: the task's own quality (named ``quality_name``: accuracy, perplexity, ...),
    its loss, and the objective strategies maximise; ``kl``, the mean KL divergence from the dense model,
    where the worker holds its outputs (``search.fitness: kl``). ``count``, the items scored, travels with
    the object but not in its JSON (a result's ``tokens`` reports it)."""

    quality_name: str
    quality: float
    loss: float
    objective: float
    kl: float | None = None
    count: int = field(default=0, compare=False)  # not in the JSON, so not in equality either

    def to_dict(self) -> dict[str, float]:
        out = {self.quality_name: self.quality, "loss": self.loss, "objective": self.objective}
        return out if self.kl is None else {**out, "kl": self.kl}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitMetrics:
        names = [k for k in data if k not in NOT_QUALITY]
        if len(names) != 1:
            raise ValueError(f"split metrics need exactly one quality besides loss and objective, got {sorted(data)}")
        name, kl = names[0], data.get("kl")
        return cls(
            name, float(data[name]), float(data["loss"]), float(data["objective"]), None if kl is None else float(kl)
        )


@dataclass(frozen=True)
class EvalRequest:
    """One candidate for an actor: per-layer sparsities in layer order, and optionally the importance
    metric (a metric search's ``expr:`` candidate) to rank weights by instead of the worker's own;
    ``limit``: score only the first items of each split (a search stage's tokens or samples)."""

    candidate_id: int
    sparsity: list[float]
    metric: str | None = None
    splits: tuple[Split, ...] = ("validation",)
    recovery_steps: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class LatencyRequest:
    """How a worker times a candidate (``search.latency``): median of ``repeats`` forward passes on a
    batch of ``batch`` rows after ``warmup`` untimed ones, interleaved with the dense model's."""

    batch: int = 1
    repeats: int = 30
    warmup: int = 3


@dataclass(frozen=True)
class EvalResult:
    """What one candidate gave: per-split scores, achieved sparsity (overall and per layer), nonzero
    parameters, forward FLOPs on the task's example input (see ``PruningEngine._measure``), wall time;
    where latency was asked for, the pruned model's milliseconds per forward pass and its speedup over the
    dense model timed in the same process (``workers/latency.py``); ``tokens``, the validation items
    (tokens or samples) it was scored on, where a search asked (see ``counted``)."""

    metrics: dict[str, SplitMetrics]
    achieved_sparsity: float
    layers: dict[str, float]
    params: int
    flops: int
    seconds: float
    latency_ms: float | None = None
    speedup: float | None = None
    tokens: int | None = None

    def counted(self) -> EvalResult:
        """This result with ``tokens`` set from its validation scores (a search's trials record it; the
        JSON of a one-off ``prune`` stays as it was)."""
        scored = self.metrics.get("validation")
        return replace(self, tokens=scored.count if scored is not None else 0)

    def _latency(self) -> dict[str, float]:
        """The latency keys, only where they were measured (the JSON of other results is unchanged)."""
        if self.latency_ms is None or self.speedup is None:
            return {}
        return {"latency_ms": self.latency_ms, "speedup": self.speedup}

    def objective(self, split: str = "validation") -> float:
        return self.metrics[split].objective

    def quality(self, split: str = "validation") -> float:
        return self.metrics[split].quality

    def entry(self) -> dict[str, Any]:
        """The JSON of a summary's ``best``/``baselines`` entries (a trial's row has ``seconds`` too)."""
        return Entry.of(self).to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {s: m.to_dict() for s, m in self.metrics.items()},
            "achieved_sparsity": self.achieved_sparsity,
            "layers": dict(self.layers),
            "params": self.params,
            "flops": self.flops,
            "seconds": self.seconds,
            **self._latency(),
            **({} if self.tokens is None else {"tokens": self.tokens}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        return cls(
            metrics={s: SplitMetrics.from_dict(m) for s, m in data["metrics"].items()},
            achieved_sparsity=float(data["achieved_sparsity"]),
            layers={str(k): float(v) for k, v in data["layers"].items()},
            params=int(data["params"]),
            flops=int(data["flops"]),
            seconds=float(data["seconds"]),
            latency_ms=None if data.get("latency_ms") is None else float(data["latency_ms"]),
            speedup=None if data.get("speedup") is None else float(data["speedup"]),
            tokens=None if data.get("tokens") is None else int(data["tokens"]),
        )


@dataclass(frozen=True)
class EvalReply:
    """An actor's answer for one candidate: a result, or the one-line error (and a short trace) of the
    exception that failed it; a time-out or a dead worker is an error too."""

    candidate_id: int
    result: EvalResult | None = None
    error: str | None = None
    worker: str | None = None
    trace: str | None = None

    def __post_init__(self) -> None:
        if (self.result is None) == (self.error is None):
            raise ValueError("an evaluation reply holds either a result or an error")


@dataclass(frozen=True)
class WorkerInfo:
    """What the driver needs from a built worker to set up the search, without loading any model."""

    layers: list[Layer]
    skipped: list[str]
    quality: str
    higher_is_better: bool
    dense_params: int
    dense_flops: int
    worker: str
    build_seconds: float
    device: str

    @property
    def scored_by(self) -> Quality:
        """The task's quality with its direction, as summaries and tables show it."""
        return Quality(self.quality, self.higher_is_better)


@dataclass(frozen=True)
class Healed:
    """An entry's quality after the structured recovery fine-tune (``pruning.recovery``): the same candidate
    distilled from the dense model (``distill: kl``) or trained on the task loss (``none``)."""

    metrics: dict[str, SplitMetrics]
    steps: int
    lr: float
    distill: str = "kl"

    def to_dict(self) -> dict[str, Any]:
        metrics = {s: m.to_dict() for s, m in self.metrics.items()}
        return {"metrics": metrics, "steps": self.steps, "lr": self.lr, "distill": self.distill}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Healed:
        metrics = {s: SplitMetrics.from_dict(m) for s, m in data["metrics"].items()}
        return cls(metrics, int(data["steps"]), float(data["lr"]), str(data.get("distill", "kl")))


@dataclass(frozen=True)
class Entry:
    """A summary's entry for one evaluated candidate (its ``best``, a baseline, the ``dense`` model, a Pareto
    member or a leaderboard row): an :class:`EvalResult` without its timing, plus where it came from;
    ``strategy``/``seed``, the search that found it (a benchmark's best)."""

    layers: dict[str, float]
    achieved_sparsity: float
    metrics: dict[str, SplitMetrics]
    params: int
    flops: int
    latency_ms: float | None = None
    speedup: float | None = None
    candidate_id: int | None = None
    expression: str | None = None  # a metric search's formula
    strategy: str | None = None
    seed: int | None = None
    healed: Healed | None = None  # a structured search's best and baselines under ``pruning.recovery``

    @classmethod
    def of(cls, result: EvalResult, candidate_id: int | None = None, expression: str | None = None) -> Entry:
        timed = result.latency_ms is not None and result.speedup is not None
        return cls(
            dict(result.layers),
            result.achieved_sparsity,
            dict(result.metrics),
            result.params,
            result.flops,
            result.latency_ms if timed else None,
            result.speedup if timed else None,
            candidate_id,
            expression,
        )

    def quality(self, split: str = "validation") -> float:
        return self.metrics[split].quality

    def to_dict(self) -> dict[str, Any]:
        """The keys in the order summaries have always had them: a leaderboard row leads with its expression
        and id, other entries end with the id (and a benchmark's best with the strategy and seed)."""
        out: dict[str, Any] = {}
        if self.expression is not None:
            out.update(expression=self.expression, candidate_id=self.candidate_id)
        out.update(
            layers=dict(self.layers),
            achieved_sparsity=self.achieved_sparsity,
            metrics={s: m.to_dict() for s, m in self.metrics.items()},
            params=self.params,
            flops=self.flops,
        )
        if self.latency_ms is not None and self.speedup is not None:
            out.update(latency_ms=self.latency_ms, speedup=self.speedup)
        if self.expression is None and self.candidate_id is not None:
            out["candidate_id"] = self.candidate_id
        if self.strategy is not None:
            out["strategy"] = self.strategy
        if self.seed is not None:
            out["seed"] = self.seed
        if self.healed is not None:
            out["healed"] = self.healed.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        def optional(key: str, kind: type) -> Any:
            return None if data.get(key) is None else kind(data[key])

        return cls(
            layers={str(k): float(v) for k, v in data["layers"].items()},
            achieved_sparsity=float(data["achieved_sparsity"]),
            metrics={s: SplitMetrics.from_dict(m) for s, m in data["metrics"].items()},
            params=int(data["params"]),
            flops=int(data["flops"]),
            latency_ms=optional("latency_ms", float),
            speedup=optional("speedup", float),
            candidate_id=optional("candidate_id", int),
            expression=optional("expression", str),
            strategy=optional("strategy", str),
            seed=optional("seed", int),
            healed=None if data.get("healed") is None else Healed.from_dict(data["healed"]),
        )


@dataclass(frozen=True)
class Failed:
    """A baseline or dense entry the task could not evaluate: reported with its error, not dropped."""

    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error}


def entry_from_dict(data: dict[str, Any]) -> Entry | Failed:
    """An entry of a summary's JSON, or its failure (``{"error": ...}``)."""
    return Failed(data["error"]) if "error" in data else Entry.from_dict(data)


def entry_of(reply: EvalReply) -> Entry | Failed:
    """The entry of a re-evaluated candidate, or its error."""
    return Entry.of(reply.result) if reply.result is not None else Failed(reply.error)
