"""Heuristic allocations computed from a loaded engine (the scores they need live there)."""

from __future__ import annotations

import numpy as np

from prunehive.search.allocations import ALLOCATIONS, allocate
from prunehive.search.space import SearchSpace
from prunehive.workers.engine import PruningEngine
from prunehive.workers.metrics import magnitude


def baseline_allocation(engine: PruningEngine, space: SearchSpace, name: str) -> np.ndarray:
    """Per-layer sparsities of a heuristic, in the space's layer order.

    ``global`` thresholds the engine's own metric scores across layers (Global MP when the
    metric is magnitude); ``owl`` uses the Wanda outlier ratios of each layer.
    """
    if name not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {name!r}; choose one of {', '.join(ALLOCATIONS)}")
    if name == "global":
        metric = None if engine.granularity.kind in ("layer", "row") else magnitude
        scores = [engine.scores(n, metric).detach().double().flatten().numpy() for n in space.names]
        return allocate(name, space, scores=scores)
    if name == "owl":
        return allocate(name, space, outlier_ratios=engine.outlier_ratios())
    return allocate(name, space)
