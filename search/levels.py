"""The discrete side of the search space: snapping sparsities onto a grid of levels, and the
level-switch mutation of EvoPress.

A level-based solver (SparseGPT's level database) can only load the sparsities it pruned each
layer at, so a candidate is one level per layer. No grid of levels can meet an arbitrary budget to
the last weight, so "exact" means, here: no single one-level move of any layer brings the
budget-weighted sparsity closer to the target (see :func:`settle`). Hence the gap to the target is
at most half of one level step of every layer that could still move towards it
(:func:`budget_slack`), which for a transformer's many equal layers is a tiny fraction of a percent.

Pure functions of arrays (weights summing to one, each layer's allowed levels), so ``space.py`` and
the strategies share them without import cycles.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ROUNDING = 1e-12  # budget differences below this are float noise, not a move worth making


def allowed_levels(levels: Sequence[float], lo: np.ndarray, hi: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    """Each layer's levels inside its bounds; a layer with none cannot take part in the search."""
    grid = np.asarray(levels, dtype=np.float64)
    out = []
    for name, a, b in zip(names, lo, hi, strict=True):
        inside = grid[(grid >= a - ROUNDING) & (grid <= b + ROUNDING)]
        if inside.size == 0:
            raise ValueError(f"layer {name!r} has no pruning level within its bounds [{a:g}, {b:g}]")
        out.append(inside)
    return out


def check_levels(levels: Sequence[float]) -> list[float]:
    """Levels must be sparsities in [0, 1), strictly increasing."""
    values = [float(v) for v in levels]
    if not values:
        raise ValueError("levels: give at least one sparsity level")
    if any(not 0.0 <= v < 1.0 for v in values):
        raise ValueError(f"levels must lie in [0, 1), got {values}")
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"levels must be strictly increasing, got {values}")
    return values


def _nearest(grid: np.ndarray, value: float) -> float:
    return float(grid[int(np.argmin(np.abs(grid - value)))])


def round_to_levels(x: np.ndarray, w: np.ndarray, allowed: list[np.ndarray]) -> np.ndarray:
    """Round a feasible continuous vector to levels, heaviest layers first, carrying each layer's
    rounding error (in budget units) on to the lighter layers, which can absorb it more finely."""
    out = np.empty_like(x)
    carry = 0.0
    for i in sorted(range(x.size), key=lambda j: (-w[j], j)):
        wanted = x[i] + (carry / w[i] if w[i] > 0 else 0.0)
        out[i] = _nearest(allowed[i], wanted)
        carry += w[i] * (x[i] - out[i])
    return out


def _neighbour(grid: np.ndarray, value: float, direction: int) -> float | None:
    """The next level above (``direction`` 1) or below (-1) ``value``, if any."""
    side = grid[grid > value + ROUNDING] if direction > 0 else grid[grid < value - ROUNDING]
    if side.size == 0:
        return None
    return float(side.min() if direction > 0 else side.max())


def _steps(x: np.ndarray, w: np.ndarray, allowed: list[np.ndarray], direction: int) -> tuple[np.ndarray, np.ndarray]:
    """Each layer's next level in ``direction`` and the budget that move adds (NaN where none)."""
    found = [_neighbour(a, xi, direction) for a, xi in zip(allowed, x, strict=True)]
    nxt = np.array([np.nan if v is None else v for v in found])
    delta = np.where(w > 0, w * (nxt - x), np.nan)
    return nxt, delta


def settle(
    x: np.ndarray, w: np.ndarray, allowed: list[np.ndarray], target: float, frozen: Sequence[int] = ()
) -> np.ndarray:
    """Move layers a level at a time until nothing brings the budget closer to ``target``: the best
    single move, or else the best pair (one layer up, another down), which reaches finer gaps than
    any single layer where the small layers sit at their bounds. Every move shrinks the gap, so
    this ends; at the end no single move helps, which is what :func:`budget_slack` relies on.
    ``frozen`` layers stay put (a mutation's own switches, which settling must not undo)."""
    x = x.copy()
    movable = np.ones(x.size, dtype=bool)
    movable[list(frozen)] = False
    for _ in range(10 * x.size * max(len(a) for a in allowed) + 10):
        gap = target - float(w @ x)
        up, du = _steps(x, w, allowed, 1)
        down, dd = _steps(x, w, allowed, -1)
        du[~movable] = np.nan
        dd[~movable] = np.nan
        single = np.abs(gap - np.concatenate([du, dd]))
        pairs = np.abs(gap - du[:, None] - dd[None, :])
        np.fill_diagonal(pairs, np.nan)
        best_single = np.nanmin(single) if np.isfinite(single).any() else np.inf
        best_pair = np.nanmin(pairs) if np.isfinite(pairs).any() else np.inf
        if min(best_single, best_pair) >= abs(gap) - ROUNDING:
            break
        if best_single <= best_pair:
            k = int(np.nanargmin(single))
            i = k % x.size
            x[i] = up[i] if k < x.size else down[i]
        else:
            a, b = np.unravel_index(int(np.nanargmin(pairs)), pairs.shape)
            x[a], x[b] = up[a], down[b]
    return x


def budget_slack(x: np.ndarray, w: np.ndarray, allowed: list[np.ndarray], target: float) -> float:
    """How far a settled assignment may miss ``target``: half a level step of the layer that can
    move towards the target most finely (a continuous budget's rounding where none can move)."""
    gap = target - float(w @ x)
    direction = 1 if gap > 0 else -1
    steps = []
    for i in range(x.size):
        nxt = _neighbour(allowed[i], x[i], direction)
        if nxt is not None and w[i] > 0:
            steps.append(w[i] * abs(nxt - x[i]))
    return 0.5 * min(steps) + ROUNDING if steps else 1e-9


def level_swap(x: np.ndarray, allowed: list[np.ndarray], rng: np.random.Generator, swaps: int = 1) -> np.ndarray:
    """EvoPress's depth-mode move: ``swaps`` times, two layers exchange their levels (each level on the other's
    grid), e.g. a removed sublayer comes back while a kept one goes. Equal-sized layers keep the budget
    exactly; the caller's repair settles any other pair."""
    x = x.copy()
    for _ in range(swaps):
        pairs = [
            (a, b)
            for a in range(x.size)
            for b in range(a + 1, x.size)
            if x[a] != x[b] and np.any(allowed[a] == x[b]) and np.any(allowed[b] == x[a])
        ]
        if not pairs:
            break
        a, b = pairs[int(rng.integers(len(pairs)))]
        x[a], x[b] = x[b], x[a]
    return x


def level_switch(
    x: np.ndarray, w: np.ndarray, allowed: list[np.ndarray], rng: np.random.Generator, switches: int = 1
) -> tuple[np.ndarray, list[int]]:
    """EvoPress's mutation: ``switches`` times, one layer one level up and another one level down.

    The layer going down is drawn among those whose step moves the budget by the same amount as the
    step up (equal size, equal level spacing: a transformer's q/k/v/o or MLP projections), so the
    budget holds to the last bit. Where no layer matches (layers of all different sizes), any layer
    with room goes down, and the caller settles the budget again with the switched layers frozen.
    Returns the new vector and the layers of inexact switches (none: the budget held exactly).
    """
    x = x.copy()
    inexact: list[int] = []
    for _ in range(switches):
        ups = [i for i in range(x.size) if _neighbour(allowed[i], x[i], 1) is not None and w[i] > 0]
        if not ups:
            break
        a = ups[int(rng.integers(len(ups)))]
        up = float(_neighbour(allowed[a], x[a], 1))  # type: ignore[arg-type]
        moved = w[a] * (up - x[a])
        downs, matching = [], []
        for i in range(x.size):
            below = _neighbour(allowed[i], x[i], -1)
            if i == a or below is None or w[i] <= 0:
                continue
            downs.append((i, below))
            if abs(w[i] * (x[i] - below) - moved) <= 1e-9 * max(moved, 1e-300):
                matching.append((i, below))
        pick_from = matching or downs
        if not pick_from:
            break
        b, below = pick_from[int(rng.integers(len(pick_from)))]
        if not matching:
            inexact += [a, int(b)]
        x[a], x[b] = up, below
    return x, inexact
