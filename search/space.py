"""The search space: prunable layers, per-layer bounds, a global budget, and an exact repair.

Every strategy proposes raw per-layer sparsity vectors; ``repair`` projects them onto the
feasible set so that every candidate meets the budget exactly and no layer collapses. With
``levels`` (a level-based solver's grid) the space is discrete: repair then lands on one level per
layer, as close to the budget as the grid allows (``search/levels.py`` says what that means).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from prunehive.search.levels import allowed_levels, budget_slack, check_levels, round_to_levels, settle

Budget = Literal["params", "flops"]

# Entries of a proposed vector further than this outside their bounds (inf, 1e300) are first
# clipped here: it keeps the multiplier finite and cannot change the repair of sane inputs.
_FAR = 1e6


@dataclass(frozen=True)
class Layer:
    """What a strategy may know about one prunable layer (no torch objects)."""

    name: str
    kind: str  # "linear" | "conv2d"
    shape: tuple[int, ...]  # weight shape: (out, in) or (out, in, kh, kw)
    params: int  # prunable weights (bias excluded)
    flops: int  # dense forward FLOPs of the layer on the task's example input

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Layer:
        d = dict(data)
        d["shape"] = tuple(d["shape"])  # type: ignore[arg-type]
        return cls(**d)  # type: ignore[arg-type]


class InfeasibleBudgetError(ValueError):
    """The target cannot be met inside the per-layer bounds."""


@dataclass
class SearchSpace:
    """Per-layer sparsity vectors whose budget-weighted mean equals ``target``.

    ``min_density`` keeps at least that fraction of every layer (so no layer collapses);
    ``max_sparsity``/``min_sparsity`` may be overridden per layer by name. ``levels`` (sorted
    sparsities) makes the space discrete: every layer takes one of the levels inside its bounds.
    """

    layers: list[Layer]
    target: float
    budget: Budget = "params"
    min_density: float = 0.01
    min_sparsity: float = 0.0
    overrides: dict[str, tuple[float, float]] = field(default_factory=dict)
    levels: list[float] | None = None

    def __post_init__(self) -> None:
        if self.levels is not None:
            self.levels = check_levels(self.levels)
        if not self.layers:
            raise ValueError("the search space has no prunable layers")
        if not 0.0 <= self.target < 1.0:
            raise ValueError(f"target sparsity {self.target} is outside [0, 1)")
        unknown = set(self.overrides) - {layer.name for layer in self.layers}
        if unknown:
            raise ValueError(f"bounds name unknown layers: {sorted(unknown)}")
        lo, hi = self.bounds()
        w = self.weights()
        if float(w @ lo) > self.target + 1e-9 or float(w @ hi) < self.target - 1e-9:
            raise InfeasibleBudgetError(
                f"target sparsity {self.target} is not reachable within the per-layer bounds "
                f"(reachable: {float(w @ lo):.4f} .. {float(w @ hi):.4f})"
            )

    @property
    def dim(self) -> int:
        return len(self.layers)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def weights(self) -> np.ndarray:
        """Budget weights of the layers, normalised to sum to one."""
        raw = np.array(
            [layer.params if self.budget == "params" else layer.flops for layer in self.layers],
            dtype=np.float64,
        )
        if raw.sum() <= 0:
            raise ValueError(f"no layer has a positive {self.budget} count")
        return raw / raw.sum()

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.full(self.dim, self.min_sparsity, dtype=np.float64)
        hi = np.full(self.dim, 1.0 - self.min_density, dtype=np.float64)
        for i, layer in enumerate(self.layers):
            if layer.name in self.overrides:
                lo[i], hi[i] = self.overrides[layer.name]
        if np.any(lo > hi):
            raise ValueError("a per-layer lower bound exceeds its upper bound")
        if np.any(lo < 0.0) or np.any(hi > 1.0):
            raise ValueError("per-layer sparsity bounds must lie within [0, 1]")
        if self.levels is not None:  # a discrete layer reaches only from its lowest to its highest level
            allowed = allowed_levels(self.levels, lo, hi, self.names)
            lo = np.array([a.min() for a in allowed])
            hi = np.array([a.max() for a in allowed])
        return lo, hi

    @property
    def discrete(self) -> bool:
        return self.levels is not None

    def allowed(self) -> list[np.ndarray]:
        """Each layer's levels inside its bounds (discrete spaces only)."""
        if self.levels is None:
            raise ValueError("the search space has no levels")
        lo, hi = self.bounds()
        return allowed_levels(self.levels, lo, hi, self.names)

    def level_indices(self, vector: npt.ArrayLike) -> list[int]:
        """Each layer's index into ``levels`` (the level database's key) for an on-grid vector."""
        if self.levels is None:
            raise ValueError("the search space has no levels")
        grid = np.asarray(self.levels)
        return [int(np.argmin(np.abs(grid - v))) for v in np.asarray(vector, dtype=np.float64)]

    def settle(self, vector: npt.ArrayLike) -> np.ndarray:
        """An on-grid vector moved level by level until no single move brings the budget closer."""
        return settle(np.asarray(vector, dtype=np.float64), self.weights(), self.allowed(), self.target)

    def on_grid(self, vector: npt.ArrayLike) -> bool:
        """Whether a discrete space's vector already is one level per layer, meeting the budget."""
        x = np.asarray(vector, dtype=np.float64)
        if self.levels is None or x.shape != (self.dim,):
            return False
        levels = all(np.any(np.abs(a - v) <= 1e-12) for a, v in zip(self.allowed(), x, strict=True))
        return levels and abs(self.achieved(x) - self.target) <= self.tolerance(x)

    def tolerance(self, vector: npt.ArrayLike) -> float:
        """How far ``vector`` may miss the target and still count as exact: rounding for a continuous
        space; half the finest level step towards the target for a discrete one."""
        if self.levels is None:
            return 1e-6
        x = np.asarray(vector, dtype=np.float64)
        return budget_slack(x, self.weights(), self.allowed(), self.target)

    def fill(self, vector: npt.ArrayLike, rng: np.random.Generator) -> np.ndarray:
        """A feasible vector with a one-sided budget's unused slack spent (``StructuredSpace.fill``); this
        space's budget is a target met as exactly as it can be, so there is none."""
        return np.asarray(vector, dtype=np.float64)

    def achieved(self, vector: npt.ArrayLike) -> float:
        """Budget-weighted sparsity of a per-layer vector."""
        return float(self.weights() @ np.asarray(vector, dtype=np.float64))

    def repair(self, vector: npt.ArrayLike) -> np.ndarray:
        """The feasible point closest to ``vector``: its projection, which a discrete space then rounds
        to levels (heaviest layers first, carrying the error to lighter ones) and settles."""
        x = self._project(vector)
        if self.levels is None:
            return x
        w = self.weights()
        allowed = self.allowed()
        return settle(round_to_levels(x, w, allowed), w, allowed, self.target)

    def _project(self, vector: npt.ArrayLike) -> np.ndarray:
        """Euclidean projection of ``vector`` onto {lo <= x <= hi, weights . x = target}.

        The solution is x_i = clip(v_i + lam * w_i, lo_i, hi_i) for the lam that meets the budget.
        The budget is monotone in lam, so bisection brackets it down to adjacent floats; the
        answer is then interpolated between the two bracket ends, which stays inside the bounds
        and meets the budget to rounding even where one layer jumps across its whole range.
        NaN entries count as the target.
        """
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != (self.dim,):
            raise ValueError(f"expected a vector of {self.dim} sparsities, got shape {v.shape}")
        w = self.weights()
        lo, hi = self.bounds()
        v = np.clip(np.where(np.isnan(v), self.target, v), lo - _FAR, hi + _FAR)
        at_lo, at_hi = float(w @ lo), float(w @ hi)
        if at_lo > self.target + 1e-9 or at_hi < self.target - 1e-9:
            raise InfeasibleBudgetError(f"target sparsity {self.target} is not reachable within the per-layer bounds")
        if at_lo >= self.target:  # only rounding away from the lower corner
            return lo.copy()
        if at_hi <= self.target:
            return hi.copy()

        def point(lam: float) -> np.ndarray:
            return np.clip(v + lam * w, lo, hi)

        def total(lam: float) -> float:
            return float(w @ point(lam))

        # Below every lower breakpoint all weighted layers sit at lo; above every upper one, at hi.
        pos = w > 0
        a = float(np.min((lo[pos] - v[pos]) / w[pos]))
        b = float(np.max((hi[pos] - v[pos]) / w[pos]))
        while total(a) > self.target:  # guards rounding at the breakpoint; ends because w @ lo < target
            a = 2.0 * a - 1.0
        while total(b) < self.target:
            b = 2.0 * b + 1.0
        for _ in range(2000):  # halving a finite float interval reaches adjacent floats well before this
            mid = 0.5 * (a + b)
            if not a < mid < b:
                break
            if total(mid) < self.target:
                a = mid
            else:
                b = mid
        xa, xb = point(a), point(b)
        ta, tb = float(w @ xa), float(w @ xb)
        theta = 0.0 if tb <= ta else min(1.0, max(0.0, (self.target - ta) / (tb - ta)))
        x = np.clip(xa + theta * (xb - xa), lo, hi)
        # Spread the last rounding error over the layers still strictly inside their bounds.
        free = (x > lo + 1e-12) & (x < hi - 1e-12) & pos
        gap = self.target - float(w @ x)
        if free.any() and gap != 0.0:
            x[free] = np.clip(x[free] + gap / float(w[free].sum()), lo[free], hi[free])
        return x

    def reachable(self) -> tuple[float, float]:
        """The lowest and highest budget-weighted sparsity the per-layer bounds allow."""
        lo, hi = self.bounds()
        w = self.weights()
        return float(w @ lo), float(w @ hi)

    def with_target(self, target: float) -> SearchSpace:
        """A copy aimed at another global target (NSGA-II varies it per individual)."""
        return replace(self, target=float(target))

    def with_levels(self, levels: list[float] | None) -> SearchSpace:
        """A copy over a level grid (a level-based solver's), or continuous again with ``None``."""
        return replace(self, levels=None if levels is None else list(levels))

    def uniform(self) -> np.ndarray:
        return self.repair(np.full(self.dim, self.target))

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "layers": [layer.to_dict() for layer in self.layers],
            "target": self.target,
            "budget": self.budget,
            "min_density": self.min_density,
            "min_sparsity": self.min_sparsity,
            "overrides": {k: list(v) for k, v in self.overrides.items()},
        }
        if self.levels is not None:
            data["levels"] = list(self.levels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SearchSpace:
        layers = [Layer.from_dict(d) for d in data["layers"]]  # type: ignore[attr-defined]
        overrides = {k: (float(v[0]), float(v[1])) for k, v in dict(data.get("overrides", {})).items()}  # type: ignore[call-overload]
        return cls(
            layers=layers,
            target=float(data["target"]),  # type: ignore[arg-type]
            budget=data.get("budget", "params"),  # type: ignore[arg-type]
            min_density=float(data.get("min_density", 0.01)),  # type: ignore[arg-type]
            min_sparsity=float(data.get("min_sparsity", 0.0)),  # type: ignore[arg-type]
            overrides=overrides,
            levels=[float(v) for v in data["levels"]] if data.get("levels") is not None else None,  # type: ignore[attr-defined]
        )
