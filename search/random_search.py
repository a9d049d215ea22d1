"""Random search: the neutral baseline every other strategy has to beat.

Vectors are drawn independently of all feedback, so the only state is the base class's RNG (and,
with ``fidelity``/``survivors``, the successive-halving stage of :mod:`prunehive.search.halving`);
each draw is repaired onto the exact budget.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from prunehive.search.halving import Halving, make_halving, staged_candidate, top_stage_best
from prunehive.search.options import RandomOptions
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, CandidateMeta, Proposal, Strategy

Distribution = Literal["uniform", "target"]


class RandomStrategy(Strategy):
    """Independent random allocations.

    Options:
      distribution: ``"uniform"`` draws every layer uniformly in its own bounds; ``"target"``
        draws around the uniform allocation (target + Normal(0, spread)), which keeps most
        layers near the global target instead of spreading them over the whole range.
      spread: standard deviation of the ``"target"`` distribution, in sparsity units.
      fidelity, survivors: successive halving: tokens per stage and candidates promoted after each.
      rung: fresh candidates per rung at the first stage (default: twice ``survivors[0]``).
    """

    name = "random"
    Options = RandomOptions
    n_objectives = 1

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        distribution: Distribution = "uniform",
        spread: float = 0.15,
        fidelity: list[int] | None = None,
        survivors: list[int] | None = None,
        rung: int | None = None,
    ) -> None:
        super().__init__(space, budget, seed)
        if distribution not in ("uniform", "target"):
            raise ValueError(f"distribution must be 'uniform' or 'target', not {distribution!r}")
        if spread <= 0:
            raise ValueError("spread must be positive")
        self.distribution: Distribution = distribution
        self.spread = float(spread)
        self.halving: Halving | None = make_halving(fidelity, survivors, rung)

    def _propose(self, n: int) -> list[Proposal]:
        if self.halving is not None:
            return self.halving.propose(n, self, lambda _k, _i: self._draw())
        return [self._draw() for _ in range(n)]

    def _draw(self) -> Proposal:
        lo, hi = self.space.bounds()
        if self.distribution == "uniform":
            vector = self.rng.uniform(lo, hi)
        else:
            vector = np.clip(self.space.target + self.rng.normal(0.0, self.spread, self.space.dim), lo, hi)
        return vector, {"origin": "random"}

    def _candidate(self, ident: int, vector: np.ndarray, meta: CandidateMeta) -> Candidate:
        return staged_candidate(self.space, ident, vector, meta)

    def best(self) -> list[Candidate]:
        return top_stage_best(self.history) if self.halving is not None else super().best()

    def _extra_state(self) -> dict[str, Any]:
        return {"halving": self.halving.state_dict()} if self.halving is not None else {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if self.halving is not None:
            self.halving.load_state_dict(state["halving"])
