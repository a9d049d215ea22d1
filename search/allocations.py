"""Heuristic per-layer sparsity allocations: cheap baselines and warm starts for the search.

Each is a small pure function of the search space (plus, where the heuristic needs them,
importance scores or outlier ratios computed elsewhere). Every result goes through
``space.repair`` so it meets the budget exactly and respects the per-layer bounds, whatever
the heuristic's own arithmetic gave.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from prunehive.search.space import SearchSpace

ALLOCATIONS = ("uniform", "global", "erk", "owl")  # the default baselines of a search
TUNED = ("atp",)  # heuristics with a hyper-parameter the worker picks on validation
HEURISTICS = (*ALLOCATIONS, *TUNED)  # every name ``search.baselines`` accepts
ATP_GRID = 6  # slopes tried by the atp baseline, from uniform (0) to the steepest feasible


def uniform(space: SearchSpace) -> np.ndarray:
    """Every layer at the target: the baseline every other allocation must beat."""
    return space.repair(np.full(space.dim, space.target))


def global_threshold(space: SearchSpace, scores: Sequence[npt.ArrayLike]) -> np.ndarray:
    """Global magnitude pruning: one score threshold across all layers.

    The threshold removes ``target`` of all weights (counted by weights even for a FLOPs
    budget); each layer's sparsity is the fraction of its scores under it. Scores tied at the
    threshold are shared out in proportion so the total is exact before ``repair``.
    """
    if len(scores) != space.dim:
        raise ValueError(f"expected scores for {space.dim} layers, got {len(scores)}")
    flat = [np.asarray(s, dtype=np.float64).ravel() for s in scores]
    for layer, s in zip(space.layers, flat, strict=True):
        if s.size != layer.params:
            raise ValueError(f"layer {layer.name!r} has {layer.params} weights but {s.size} scores")
    everything = np.concatenate(flat)
    k = int(round(space.target * everything.size))
    if k <= 0:
        return space.repair(np.zeros(space.dim))
    threshold = np.partition(everything, k - 1)[k - 1]  # k-th smallest, without a full sort
    below = np.array([np.count_nonzero(s < threshold) for s in flat], dtype=np.float64)
    tied = np.array([np.count_nonzero(s == threshold) for s in flat], dtype=np.float64)
    share = (k - below.sum()) / tied.sum() if tied.sum() > 0 else 0.0
    sizes = np.array([max(s.size, 1) for s in flat], dtype=np.float64)
    return space.repair((below + share * tied) / sizes)


def erk(space: SearchSpace) -> np.ndarray:
    """Erdős–Rényi-Kernel (RigL): density proportional to sum(shape) / prod(shape).

    Small layers (few weights per fan-in/fan-out) stay denser. eps is chosen so the
    param-weighted density is 1 - target; layers that would exceed their maximum density
    (1, or 1 - lower sparsity bound) are pinned there and eps is recomputed over the rest.
    """
    n = np.array([layer.params for layer in space.layers], dtype=np.float64)
    raw = np.array([sum(layer.shape) / max(float(np.prod(layer.shape)), 1.0) for layer in space.layers])
    lo, _ = space.bounds()
    max_density = 1.0 - lo
    pinned = np.zeros(space.dim, dtype=bool)
    goal = (1.0 - space.target) * n.sum()
    density = max_density.copy()
    while not pinned.all():
        free = ~pinned
        rest = goal - float(n[pinned] @ max_density[pinned])
        denom = float(n[free] @ raw[free])
        eps = rest / denom if denom > 0 else 0.0
        density = np.where(pinned, max_density, np.maximum(eps * raw, 0.0))
        over = free & (density > max_density)
        if not over.any():
            break
        pinned |= over
    else:
        density = max_density
    return space.repair(1.0 - density)


def owl(space: SearchSpace, outlier_ratios: Sequence[float], lam: float = 0.08) -> np.ndarray:
    """OWL (Yin et al. 2023): layers with more activation outliers keep more weights.

    Outlier ratios are mapped linearly onto [0, 2*lam] and centred, so densities spread at most
    lam either side of 1 - target; equal ratios give the uniform allocation.
    """
    d = np.asarray(outlier_ratios, dtype=np.float64)
    if d.shape != (space.dim,):
        raise ValueError(f"expected {space.dim} outlier ratios, got shape {d.shape}")
    if lam < 0:
        raise ValueError(f"lam must be non-negative, got {lam}")
    spread = float(d.max() - d.min())
    if not np.isfinite(spread) or spread <= 0.0:
        return uniform(space)
    norm = (d - d.min()) / spread * (2.0 * lam)
    density = norm - norm.mean() + (1.0 - space.target)
    return space.repair(1.0 - density)


def depths(space: SearchSpace) -> np.ndarray:
    """Each layer's depth: layers named ``<prefix>.<k>.<...>`` share the block ``<prefix>.<k>`` (a
    transformer block's projections prune together, as in ATP); others each stand alone. Depths
    count blocks in the space's (the model's) order."""
    keys: list[str] = []
    for layer in space.layers:
        parts = layer.name.split(".")
        block = next((i for i, p in enumerate(parts) if p.isdigit()), None)
        keys.append(".".join(parts[: block + 1]) if block is not None else f"#{layer.name}")
    order = list(dict.fromkeys(keys))
    return np.array([order.index(k) for k in keys], dtype=np.float64)


def atp_slopes(space: SearchSpace, points: int = ATP_GRID) -> list[float]:
    """ATP's grid of common differences: 0 (uniform) up to the steepest progression whose first and
    last blocks stay inside [min sparsity, 1 - min density] around the target."""
    d = depths(space)
    span = float(d.max())
    if span <= 0 or points < 2:
        return [0.0]
    room = min(space.target - space.min_sparsity, 1.0 - space.min_density - space.target)
    steepest = max(0.0, 2.0 * room / span)
    return [steepest * k / (points - 1) for k in range(points)]


def atp(space: SearchSpace, slope: float | None = None) -> np.ndarray:
    """ATP (Huang et al., ICML 2025): sparsity rising linearly with depth, s_d = target + slope *
    (d - mean depth), so deep blocks are pruned more. ATP picks the slope on a small grid by
    validation (:func:`atp_slopes`; the worker does that, see ``workers/baselines.py``); without
    evaluations the slope is fixed to half the steepest feasible one (the middle of that range)."""
    d = depths(space)
    if slope is None:
        slope = 0.5 * max(atp_slopes(space))
    return space.repair(space.target + float(slope) * (d - d.mean()))


def outlier_ratio(scores: npt.ArrayLike, m: float = 5.0) -> float:
    """OWL's D_l: the fraction of a layer's (Wanda) scores above m times their mean."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        return 0.0
    return float(np.count_nonzero(s > m * s.mean()) / s.size)


def allocate(
    name: str,
    space: SearchSpace,
    *,
    scores: Sequence[npt.ArrayLike] | None = None,
    outlier_ratios: Sequence[float] | None = None,
) -> np.ndarray:
    """Dispatch by name, so configs and the CLI can pick an allocation with a string."""
    if name == "uniform":
        return uniform(space)
    if name == "global":
        if scores is None:
            raise ValueError("the global allocation needs per-layer importance scores (scores=...)")
        return global_threshold(space, scores)
    if name == "erk":
        return erk(space)
    if name == "atp":
        return atp(space)
    if name == "owl":
        if outlier_ratios is None:
            raise ValueError("the owl allocation needs per-layer outlier ratios (outlier_ratios=...)")
        return owl(space, outlier_ratios)
    raise ValueError(f"unknown allocation {name!r}; choose one of {', '.join(ALLOCATIONS)}")
