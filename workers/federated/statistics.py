"""Calibration statistics across clients: what each client measures on its own rows, and how the
server pools them into the workers' ``LayerStats``, so that any metric scores the global model as if
the clients' calibration rows were in one place.

When the masks are about to change and the metric (or the OWL allocation) reads X, G or F, the
server sends the round's clients the global model in a ``query.stats`` message. Each runs
``collect_stats`` on calibration batches of its own data and replies with only what was asked: X as
one sum of squares per input channel, G and F as kept values under the mask it received (the server
knows it, as for model updates). The server pools them: X² is the sum of the squares over all rows,
rescaled to a central calibration's row count; G and F are means over all clients' batches. The
scores are then the workers' metrics on the global weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, Message, MetricRecord

from prunehive.workers.calibration import LayerStats
from prunehive.workers.federated.encoding import Masks, as_array, decode, encode
from prunehive.workers.metrics import get_metric, random_metric, statistics_read

STATS_ACTION = "stats"  # clients answer ``query.stats`` messages with their statistics
DATA_STATS = ("F", "G", "X")  # what a client measures; W is the global model's own


def stats_asked(metric: str, allocation: str | Mapping[str, float]) -> tuple[str, ...]:
    """Which statistics the clients must send: what the metric reads besides W, and X for OWL."""
    asked = set(statistics_read(metric)) & set(DATA_STATS)
    if allocation == "owl":
        asked.add("X")
    return tuple(sorted(asked))


def _absent(weight: torch.Tensor) -> torch.Tensor:
    return torch.zeros(()).expand_as(weight)  # a statistic nobody asked for: zeros, without memory


def stats_reply(
    stats: Mapping[str, LayerStats], masks: Masks | None, asked: Iterable[str], rows: int, batches: int
) -> dict[str, ArrayRecord | MetricRecord]:
    """A client's records: X as per-input-channel sums of squares, G and F as kept values, by weight name."""
    asked = set(asked)
    out: dict[str, ArrayRecord | MetricRecord] = {"metrics": MetricRecord({"rows": rows, "batches": batches})}
    if "X" in asked:
        out["X"] = ArrayRecord(
            {f"{n}.weight": as_array(s.X.reshape(*s.X.shape[:2], -1)[0, :, 0].pow(2).numpy()) for n, s in stats.items()}
        )
    for key in ("G", "F"):
        if key in asked:
            out[key] = encode({f"{n}.weight": getattr(s, key) for n, s in stats.items()}, masks, send_masks=False)
    return out


@dataclass(frozen=True)
class Scoring:
    """How the server scores weights: the metric, the statistics clients send for it, and their scale."""

    metric: str = "magnitude"
    asked: tuple[str, ...] = ()  # a subset of DATA_STATS; empty: W alone, no client is queried
    seed: int = 0  # the random metric's
    calibration_batches: int = 8  # per client
    reference_rows: int = 512  # rows of a central calibration (batches x batch size): X's scale


@dataclass
class PooledStats:
    """The server's running sums over the clients that replied to one ``query.stats``."""

    weights: dict[str, torch.Tensor]  # the global model's weights that were sent, by weight name
    masks: Masks | None  # the masks they were sent under
    reference_rows: int  # rows of a central calibration (batches x batch size): X's scale
    rows: int = 0
    batches: int = 0

    def __post_init__(self) -> None:
        self.sums: dict[str, dict[str, torch.Tensor]] = {}

    def _add(self, key: str, name: str, value: torch.Tensor) -> None:
        sums = self.sums.setdefault(key, {})
        sums[name] = sums[name] + value if name in sums else value

    def add(self, reply: Message) -> None:
        """One good reply's statistics."""
        content = reply.content
        metrics = content.metric_records["metrics"]  # wire boundary: the reply's Flower MetricRecord
        rows, batches = int(metrics["rows"]), int(metrics["batches"])  # type: ignore[arg-type]
        self.rows += rows
        self.batches += batches
        if "X" in content.array_records:
            for name, array in content.array_records["X"].items():
                self._add("X", name, torch.from_numpy(array.numpy().copy()).double())
        for key in ("G", "F"):
            if key in content.array_records:
                values, _ = decode(content.array_records[key], self.weights, self.masks)
                for name, value in values.items():
                    self._add(key, name, value.double() * batches)

    def layer_stats(self) -> dict[str, LayerStats]:
        """Pooled statistics by layer name (the weights' module names), as ``collect_stats`` gives them."""
        if self.rows == 0:
            raise RuntimeError("no client returned calibration statistics")
        out = {}
        for name, w in self.weights.items():
            x, g, f = (self.sums.get(key, {}).get(name) for key in ("X", "G", "F"))
            norms = None if x is None else (x / self.rows * self.reference_rows).sqrt().float()
            out[name.removesuffix(".weight")] = LayerStats(
                W=w,
                X=_absent(w) if norms is None else LayerStats.broadcast_x(norms, w),
                G=_absent(w) if g is None else (g / self.batches).float(),
                F=_absent(w) if f is None else (f / self.batches).float(),
            )
        return out


def weight_stats(weights: Mapping[str, torch.Tensor]) -> dict[str, LayerStats]:
    """Statistics of a metric that reads only W (magnitude, random): no client is asked anything."""
    return {n.removesuffix(".weight"): LayerStats(w, _absent(w), _absent(w), _absent(w)) for n, w in weights.items()}


def score_layers(metric: str, stats: Mapping[str, LayerStats], seed: int) -> dict[str, torch.Tensor]:
    """Each layer's scores by weight name; ``random`` is seeded per layer, as a search's engine does."""
    fn = get_metric(metric)
    return {
        f"{n}.weight": (random_metric(s, seed=seed + i) if metric == "random" else fn(s)).float()
        for i, (n, s) in enumerate(stats.items())
    }
