"""Heuristic allocations from layers' statistics and metric scores: one code path for searches (through
a loaded engine) and for federated servers (through statistics their clients sent)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from prunehive.search.allocations import HEURISTICS, allocate, atp, atp_slopes, outlier_ratio
from prunehive.search.space import SearchSpace
from prunehive.workers.calibration import LayerStats
from prunehive.workers.masks import Granularity
from prunehive.workers.metrics import magnitude, wanda

if TYPE_CHECKING:
    from prunehive.workers.engine import PruningEngine


def heuristic_allocation(
    name: str,
    space: SearchSpace,
    granularity: Granularity,
    stats: Callable[[str], LayerStats],
    scores: Callable[[str], torch.Tensor],
) -> np.ndarray:
    """Per-layer sparsities of a heuristic, in the space's layer order.

    ``global`` thresholds the metric's ``scores`` across layers (Global MP when the metric is
    magnitude; magnitudes for structured granularities, whose scores rank groups, not weights);
    ``owl`` uses each layer's share of Wanda outliers, from its statistics; ``atp`` here has no
    evaluations to pick its slope with, so it takes the fixed one (see ``allocations.atp``).
    """
    if name not in HEURISTICS:
        raise ValueError(f"unknown allocation {name!r}; choose one of {', '.join(HEURISTICS)}")
    if name == "global":
        score = scores if granularity.kind in ("layer", "row") else (lambda n: magnitude(stats(n)))
        return allocate(name, space, scores=[score(n).detach().double().flatten().numpy() for n in space.names])
    if name == "owl":
        ratios = [outlier_ratio(wanda(stats(n)).detach().double().flatten().numpy()) for n in space.names]
        return allocate(name, space, outlier_ratios=ratios)
    return allocate(name, space)


def baseline_allocation(engine: PruningEngine, space: SearchSpace, name: str) -> np.ndarray:
    """A heuristic's per-layer sparsities from a loaded engine (its statistics and its metric's scores).

    ``atp`` evaluates its grid of slopes on validation and keeps the best, as the ATP paper does."""
    if name == "atp":
        grid = [atp(space, slope) for slope in atp_slopes(space)]
        scores = [engine.evaluate([float(v) for v in x], splits=("validation",)).objective() for x in grid]
        return grid[int(np.argmax(scores))]
    return heuristic_allocation(name, space, engine.granularity, engine.stats.__getitem__, engine.scores)
