"""The search space of a structured search: one coordinate per decoder sublayer (each block's attention
and MLP), each on its own grid of levels.

A level is the share of the sublayer's parameters that a number of removed units takes away (k KV groups,
a step of MLP channels), and 1.0 where the whole sublayer goes (both sublayers of a block: the block).
Weighted by the sublayers' parameters, the mean level is exactly the share of the decoder removed, so the
params budget is checked on the same numbers the worker counts.

Budgets here are one-sided and exact: every repaired candidate removes at least ``target`` of the
parameters, and, with a latency table, its predicted latency (dense time plus each sublayer's measured
change at its level) is at most ``latency_budget`` of dense. Repair first lands as close to the target as
the grids allow (``SearchSpace.repair``), then takes the cheapest single level steps up until both hold.
Pure numpy, so the driver, the strategies and the spec share it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from prunehive.search.levels import ROUNDING, settle
from prunehive.search.space import InfeasibleBudgetError, Layer, SearchSpace

# The baselines a structured search scores at its budget (``search.baselines``' default for it).
STRUCTURED_BASELINES = ("uniform", "shortgpt", "combined")


@dataclass
class LatencyTable:
    """Measured milliseconds: the dense model's, and per sublayer per level the change from dense."""

    dense_ms: float
    deltas: list[list[float]]  # per layer, per level (level 0: 0.0)
    budget: float | None = None  # fraction of dense_ms every candidate must stay within
    probe_scale: float | None = None  # what its changes were scaled by to match whole models' timings
    probe_error: float | None = None  # median relative miss on those whole models, once scaled

    def predict(self, indices: list[int]) -> float:
        return self.dense_ms + sum(d[j] for d, j in zip(self.deltas, indices, strict=True))

    def to_dict(self) -> dict[str, Any]:
        out = {"dense_ms": self.dense_ms, "deltas": [list(d) for d in self.deltas], "budget": self.budget}
        probes = {"probe_scale": self.probe_scale, "probe_error": self.probe_error}
        return {**out, **{k: v for k, v in probes.items() if v is not None}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        def number(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        deltas = [[float(v) for v in d] for d in data["deltas"]]
        return cls(float(data["dense_ms"]), deltas, number("budget"), number("probe_scale"), number("probe_error"))


MIN_SAVING = 0.05  # a whole model predicted to save less than this share of dense does not set a scale


def saving(table: LatencyTable, indices: list[int]) -> float:
    """The share of dense latency the table predicts ``indices`` (one level per sublayer) saves."""
    return 1.0 - table.predict(indices) / table.dense_ms


def measured_share(table: LatencyTable, indices: list[int], speedup: float) -> float | None:
    """A whole model's measured saving (from its ``speedup`` over dense) as a share of the table's prediction;
    None where the table predicts less than ``MIN_SAVING``."""
    predicted = saving(table, indices)
    return None if predicted < MIN_SAVING else (1.0 - 1.0 / speedup) / predicted


def table_budget(budget: float, share: float) -> float:
    """The table's budget at which a model saving ``share`` of its predicted saving measures ``budget``."""
    return 1.0 - (1.0 - budget) / share


@dataclass
class StructuredSpace(SearchSpace):
    """Per-sublayer level grids (``grids``, ascending, first 0.0) and an optional latency table."""

    grids: list[list[float]] = field(default_factory=list)
    latency: LatencyTable | None = None

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("the search space has no prunable sublayers")
        if len(self.grids) != len(self.layers):
            raise ValueError(f"{len(self.grids)} level grids for {len(self.layers)} sublayers")
        for layer, grid in zip(self.layers, self.grids, strict=True):
            if not grid or grid[0] != 0.0 or any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
                raise ValueError(f"sublayer {layer.name!r}: levels must ascend from 0.0, got {grid}")
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"target sparsity {self.target} is outside [0, 1)")
        self.levels = sorted({v for g in self.grids for v in g})  # marks the space discrete
        if self.latency is not None and len(self.latency.deltas) != len(self.layers):
            raise ValueError("the latency table does not match the sublayers")
        top = np.array([g[-1] for g in self.grids])
        if float(self.weights() @ top) < self.target - 1e-9:
            raise InfeasibleBudgetError(f"target sparsity {self.target} removes more than the sublayers hold")

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(self.dim), np.array([g[-1] for g in self.grids], dtype=np.float64)

    def allowed(self) -> list[np.ndarray]:
        return [np.asarray(g, dtype=np.float64) for g in self.grids]

    def level_indices(self, vector: npt.ArrayLike) -> list[int]:
        x = np.asarray(vector, dtype=np.float64)
        return [int(np.argmin(np.abs(np.asarray(g) - v))) for g, v in zip(self.grids, x, strict=True)]

    def predicted_ms(self, vector: npt.ArrayLike) -> float | None:
        """The latency table's prediction for an on-grid vector (None without a table)."""
        return None if self.latency is None else self.latency.predict(self.level_indices(vector))

    def feasible(self, vector: npt.ArrayLike) -> bool:
        """On the grids, at least ``target`` removed, and within the latency budget where there is one."""
        x = np.asarray(vector, dtype=np.float64)
        on = all(np.any(np.abs(np.asarray(g) - v) <= 1e-12) for g, v in zip(self.grids, x, strict=True))
        return on and self.achieved(x) >= self.target - ROUNDING and self._within_latency(x)

    def _within_latency(self, x: np.ndarray) -> bool:
        table = self.latency
        if table is None or table.budget is None:
            return True
        return table.predict(self.level_indices(x)) <= table.budget * table.dense_ms + 1e-9

    def tolerance(self, vector: npt.ArrayLike) -> float:
        """A feasible candidate meets the budget (it may remove more); anything else does not."""
        x = np.asarray(vector, dtype=np.float64)
        return abs(self.achieved(x) - self.target) + ROUNDING if self.feasible(x) else -1.0

    def settle(self, vector: npt.ArrayLike) -> np.ndarray:
        return self.within(settle(np.asarray(vector, dtype=np.float64), self.weights(), self.allowed(), self.target))

    def repair(self, vector: npt.ArrayLike) -> np.ndarray:
        """A feasible vector is its own closest feasible point (the budgets are one-sided), so it stays:
        a baseline given as a warm start is searched from exactly as it was scored. A vector that already
        removes enough parameters keeps its levels (nearest on each grid) and only steps up where latency
        asks; projecting it onto the params target would undo its removals (with ``sparsity: 0`` and a
        latency budget every offspring would collapse to one greedy point)."""
        x = np.asarray(vector, dtype=np.float64)
        if x.shape == (self.dim,) and self.feasible(x):
            return x.copy()
        if x.shape == (self.dim,) and not np.isnan(x).any():
            snapped = np.array([g[j] for g, j in zip(self.grids, self.level_indices(x), strict=True)])
            if self.achieved(snapped) >= self.target - ROUNDING:
                return self.within(snapped)
        return self.within(super().repair(vector))

    def fill(self, vector: npt.ArrayLike, rng: np.random.Generator) -> np.ndarray:
        """Random single-level restorations (units come back) while the candidate stays within both budgets,
        until none fits (a vector over a budget is repaired first). A latency budget is an inequality over
        coarse steps: a mutation or repair that leaves part of it unused removes units no budget asked for (a
        whole block where a sublayer would do). Without a latency budget the params target is already met as
        closely as the grids allow, and the vector is returned as it is."""
        x = np.asarray(vector, dtype=np.float64).copy()
        if self.latency is None or self.latency.budget is None:
            return x
        x = self.repair(x)  # a feasible vector is its own repair
        grids = self.allowed()
        for _ in range(sum(len(g) for g in grids)):  # each restoration lowers one level: this many at most
            back = []
            for i, j in enumerate(self.level_indices(x)):
                if j > 0:
                    y = x.copy()
                    y[i] = grids[i][j - 1]
                    if self.feasible(y):
                        back.append(y)
            if not back:
                break
            x = back[int(rng.integers(len(back)))]
        return x

    def within(self, x: np.ndarray) -> np.ndarray:
        """Single level steps up until both budgets hold: for the params budget the step adding least
        over the target; for latency the step saving most predicted time per parameter share removed."""
        x = x.copy()
        w, grids = self.weights(), self.allowed()
        for _ in range(sum(len(g) for g in grids) + 1):
            short = self.achieved(x) < self.target - ROUNDING
            slow = not self._within_latency(x)
            if not short and not slow:
                return x
            steps = []
            for i, g in enumerate(grids):
                j = int(np.argmin(np.abs(g - x[i])))
                if j + 1 < len(g):
                    gain = float(w[i] * (g[j + 1] - g[j]))
                    if slow and self.latency is not None:
                        saved = self.latency.deltas[i][j] - self.latency.deltas[i][j + 1]
                        key = -saved / max(gain, 1e-12)
                    else:
                        key = gain
                    steps.append((key, i, float(g[j + 1])))
            if not steps:
                break
            _, i, value = min(steps)
            x[i] = value
        if not self.feasible(x):
            raise InfeasibleBudgetError("no candidate on the level grids meets the budgets")
        return x

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data["grids"] = [list(g) for g in self.grids]
        data["latency"] = None if self.latency is None else self.latency.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> StructuredSpace:
        latency = data.get("latency")
        return cls(
            layers=[Layer.from_dict(d) for d in data["layers"]],  # type: ignore[attr-defined]
            target=float(data["target"]),  # type: ignore[arg-type]
            grids=[[float(v) for v in g] for g in data["grids"]],  # type: ignore[attr-defined]
            latency=None if latency is None else LatencyTable.from_dict(latency),  # type: ignore[arg-type]
        )


def space_from_dict(data: dict[str, object]) -> SearchSpace:
    """Either kind of space from its ``to_dict``."""
    return StructuredSpace.from_dict(data) if "grids" in data else SearchSpace.from_dict(data)
