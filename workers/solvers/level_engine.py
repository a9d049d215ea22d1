"""Evaluate a level per layer by swapping the layers' weights in from a level database.

Built beside a ``PruningEngine`` (whose model, layers, counts and statistics it shares; the engine's
own masks are never used here). A candidate's weights are the database's tensors themselves: each
layer's parameter is pointed at the level's tensor (decoded once and kept, or a view of the mapping in
the dense layout), the model is scored, and the parameters get their dense tensors back, so the model's
own weights are never written and the restore is exact.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunehive.workers.apply import held, recover
from prunehive.workers.contracts import EvalResult
from prunehive.workers.solvers.builders import mask_levels, sparsegpt_levels
from prunehive.workers.solvers.level_db import DECODED_CACHE_BYTES, DEFAULT_LEVELS, LevelDatabase, fingerprint
from prunehive.workers.solvers.sparsegpt import check_solver_metric
from prunehive.workers.solvers.swap import measure, nonzeros, score_with
from prunehive.workers.tasks.base import Split

if TYPE_CHECKING:
    from prunehive.workers.engine import PruningEngine

SOLVERS = ("mask", "sparsegpt")


def open_database(
    engine: PruningEngine,
    solver: str,
    levels: Sequence[float] = DEFAULT_LEVELS,
    calibration_batches: int = 8,
    damping: float = 0.01,
    layout: str = "compact",
    cache_bytes: int = DECODED_CACHE_BYTES,
) -> LevelDatabase:
    """The engine's layers at ``levels`` by ``solver``, from disk or built once for the node (``layout`` and
    ``cache_bytes``: see ``LevelDatabase``; the dense layout is there to compare against)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    levels = [float(v) for v in levels]
    task, model, gran = engine.task, engine.model, engine.granularity
    batches = task.calibration_batches(calibration_batches) if solver == "sparsegpt" else []
    settings = {
        "solver": solver,
        "metric": engine.metric_name,
        "granularity": [gran.kind, gran.n, gran.m],
        "levels": levels,
        "layers": engine.names,
        "damping": damping,
        "seed": engine.seed if engine.metric_name == "random" else 0,
    }
    key = fingerprint(model.state_dict(), batches, settings)
    if solver == "sparsegpt":
        check_solver_metric(engine.metric_name)

        def build() -> Iterator[tuple[str, list[torch.Tensor]]]:
            return sparsegpt_levels(task, model, engine.names, gran, engine.metric_name, levels, batches, damping)

    else:

        def build() -> Iterator[tuple[str, list[torch.Tensor]]]:
            return mask_levels(engine, levels)

    name, total = f"{task.name}-{solver}", len(engine.names)
    return LevelDatabase.open_or_build(name, key, levels, build, total, layout=layout, cache_bytes=cache_bytes)


class LevelEngine:
    """Candidates as a level per layer (or sparsities, snapped to the nearest level)."""

    def __init__(self, engine: PruningEngine, database: LevelDatabase) -> None:
        if database.layers != engine.names:
            raise ValueError("the level database holds other layers than the engine prunes")
        self.engine, self.db = engine, database
        self.names = list(engine.names)
        modules = dict(engine.model.named_modules())
        self.dense_nonzeros = nonzeros({n: modules[n].weight for n in self.names})

    @property
    def levels(self) -> list[float]:
        return list(self.db.levels)

    def nearest(self, sparsity: Mapping[str, float] | Iterable[float]) -> list[int]:
        """Each layer's level closest to its requested sparsity (the lower one on a tie)."""
        levels = self.levels
        return [_closest(levels, v) for v in self.engine.as_dict(sparsity).values()]

    def evaluate(
        self,
        sparsity: Mapping[str, float] | Iterable[float] | None = None,
        splits: tuple[Split, ...] = ("validation",),
        recovery_steps: int = 0,
        levels: Sequence[int] | None = None,
        limit: int | None = None,
    ) -> EvalResult:
        """Score the model with each layer at its level (given, or nearest to ``sparsity``), then restore it;
        ``limit``: on the first items of each split only."""
        start = time.perf_counter()
        chosen = list(levels) if levels is not None else self.nearest(sparsity if sparsity is not None else [])
        if len(chosen) != len(self.names) or not all(0 <= i < len(self.levels) for i in chosen):
            raise ValueError(f"expected {len(self.names)} level indices in [0, {len(self.levels)}), got {chosen}")
        weights = {n: self.db.weight(n, i) for n, i in zip(self.names, chosen, strict=True)}
        metrics = score_with(self.engine, weights, splits, recovery_steps, limit)
        counts = {n: self.db.nonzeros[n][i] for n, i in zip(self.names, chosen, strict=True)}
        achieved, per_layer, params, flops = measure(self.engine, self.dense_nonzeros, counts)
        return EvalResult(metrics, achieved, per_layer, params, flops, time.perf_counter() - start)

    def export(self, sparsity: Mapping[str, float] | Iterable[float], recovery_steps: int = 0) -> nn.Module:
        """A copy of the model holding the candidate's weights, fine-tuned with their zeros held
        (``workers/apply.py:recover``) where ``recovery_steps`` asks."""
        model = copy.deepcopy(self.engine.model)
        modules = dict(model.named_modules())
        with torch.no_grad():
            for n, i in zip(self.names, self.nearest(sparsity), strict=True):
                modules[n].weight.copy_(self.db.weight(n, i))
        recover(self.engine.task, model, held(model, self.names), recovery_steps)
        return model

    def describe(self) -> dict[str, Any]:
        return self.db.describe()


def _closest(levels: list[float], value: float) -> int:
    return min(range(len(levels)), key=lambda i: abs(levels[i] - value))
