"""Random search: the neutral baseline every other strategy has to beat.

Vectors are drawn independently of all feedback, so the only state is the base class's RNG;
the base repairs each draw onto the exact budget.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Strategy

Distribution = Literal["uniform", "target"]


class RandomStrategy(Strategy):
    """Independent random allocations.

    Options:
      distribution: ``"uniform"`` draws every layer uniformly in its own bounds; ``"target"``
        draws around the uniform allocation (target + Normal(0, spread)), which keeps most
        layers near the global target instead of spreading them over the whole range.
      spread: standard deviation of the ``"target"`` distribution, in sparsity units.
    """

    name = "random"
    n_objectives = 1

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        distribution: Distribution = "uniform",
        spread: float = 0.15,
    ) -> None:
        super().__init__(space, budget, seed)
        if distribution not in ("uniform", "target"):
            raise ValueError(f"distribution must be 'uniform' or 'target', not {distribution!r}")
        if spread <= 0:
            raise ValueError("spread must be positive")
        self.distribution: Distribution = distribution
        self.spread = float(spread)

    def _propose(self, n: int) -> list[tuple[np.ndarray, dict[str, Any]]]:
        lo, hi = self.space.bounds()
        out: list[tuple[np.ndarray, dict[str, Any]]] = []
        for _ in range(n):
            if self.distribution == "uniform":
                vector = self.rng.uniform(lo, hi)
            else:
                vector = np.clip(self.space.target + self.rng.normal(0.0, self.spread, self.space.dim), lo, hi)
            out.append((vector, {"origin": "random"}))
        return out
