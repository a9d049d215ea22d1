"""EvoPress (Sieberling et al., ICML 2025): (1+λ) evolution by level switches, with multi-step selection.

On structured grids (a sublayer's last level removes it whole) half the mutations are EvoPress's depth-mode
swaps instead: two sublayers exchange their levels, so a removed sublayer returns while a kept one goes.

Each generation mutates the parent λ times (a few level switches each, so the budget holds), scores
the offspring cheaply at the first fidelity stage, promotes the best ``survivors[0]`` to the next,
more expensive stage, and so on; the best of the last stage replaces the parent if it beats it.
A generation is a rung of :mod:`prunehive.search.halving` (recorded as ``meta["generation"]``, never
shrunk at the end of the budget, its size the offspring once a parent exists): a promoted offspring is a
new candidate with the same vector and ``meta["fidelity"]`` one higher, so every trial row records the
stage (and ``tokens``) it was scored at, and a stage is a barrier.

The checkpoint holds the parent and the stages' position; the vectors of promoted candidates are read
back from the told history the runner hands back on resume. A checkpoint in the flat form (generation,
stage, left and promote beside the parent, no ``halving``) still loads, at the same position.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prunehive.search.halving import Halving, Told, top_stage_best
from prunehive.search.levels import level_swap, level_switch, settle
from prunehive.search.options import EvoPressOptions
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, CandidateMeta, Outcome, Proposal, Strategy
from prunehive.search.structured_space import StructuredSpace

SWAP_SHARE = 0.5  # of a structured search's mutations that are depth-mode swaps rather than level switches


def default_offspring(dim: int) -> int:
    """λ: twice the layers, between 8 and EvoPress's 64 (which it uses for ~200 layers)."""
    return max(8, min(64, 2 * dim))


def default_switches(dim: int) -> int:
    """Most switches per offspring: 1 for a handful of layers, EvoPress's 3 from two dozen on."""
    return max(1, min(3, dim // 8))


class EvoPressStrategy(Strategy):
    """(1+λ) evolution with level-switch mutation and multi-step selection.

    Options:
      offspring: λ, offspring per generation (default: :func:`default_offspring` of the layers).
      switches: most level switches per offspring; each draws min(U{1..k}, U{1..k}) as EvoPress does
        (default: :func:`default_switches`).
      fidelity: tokens (or samples) per stage, increasing; ``None`` is one stage at full fidelity.
      survivors: candidates kept after each stage, decreasing (the last stage's best is taken).
      step: in a continuous space, the sparsity a switch moves the finer of its two layers by.
      reevaluate_parent: score the parent again at the last stage every generation (for evaluators
        that draw fresh data per evaluation, so the parent meets its offspring on equal terms).
      initial: allocations (the runner's baselines) that compete with the uniform one for parent.
    """

    name = "evopress"
    Options = EvoPressOptions
    n_objectives = 1

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        offspring: int | None = None,
        switches: int | None = None,
        fidelity: list[int] | None = None,
        survivors: list[int] | None = None,
        step: float = 0.05,
        reevaluate_parent: bool = False,
        initial: list[list[float]] | None = None,
    ) -> None:
        super().__init__(space, budget, seed)
        self.offspring = int(offspring) if offspring is not None else default_offspring(space.dim)
        self.switches = int(switches) if switches is not None else default_switches(space.dim)
        if self.offspring < 1 or self.switches < 1 or step <= 0:
            raise ValueError("offspring and switches must be >= 1 and step positive")
        self.step = float(step)
        self.reevaluate_parent = bool(reevaluate_parent)
        self.initial = [space.uniform()] + [space.repair(np.asarray(v, dtype=np.float64)) for v in initial or []]
        self._weights = space.weights()
        self._allowed = space.allowed() if space.discrete else None
        # Grids with a whole-removal level (structured sublayers): half the mutations swap two levels
        self._removable = self._allowed is not None and any(a[-1] == 1.0 for a in self._allowed)
        self.halving = Halving(
            fidelity, survivors, self._generation_size, key="generation", shrink=False, rescore_origin="parent"
        )
        self.fidelity, self.survivors = self.halving.fidelity, self.halving.survivors
        self.parent: dict[str, Any] | None = None  # {"id", "x", "f"}
        self._asked_now: list[Proposal] = []  # this ask's offspring, which later offspring must not repeat

    @property
    def generation(self) -> int:
        return self.halving.rung

    # ---- proposals -----------------------------------------------------------------------
    def _propose(self, n: int) -> list[Proposal]:
        self._asked_now = []
        return self.halving.propose(n, self, self._fresh, rescore=self._rescore, ended=self._generation_ended)

    def _generation_size(self) -> int:
        """λ offspring of the parent; until a start has been scored, the starts (or as many random points)."""
        return self.offspring if self.parent is not None else len(self.initial)

    def _fresh(self, _offset: int, ordinal: int) -> Proposal:
        proposal = self._new_offspring(ordinal)
        self._asked_now.append(proposal)
        return proposal

    def _new_offspring(self, ordinal: int) -> Proposal:
        if self.generation == 0:
            return self.initial[ordinal], {"origin": "uniform" if ordinal == 0 else "warm-start"}
        if self.parent is None:  # every start failed: look elsewhere rather than repeat them
            lo, hi = self.space.bounds()
            return self.space.repair(self.rng.uniform(lo, hi)), {"origin": "random"}
        parent = np.asarray(self.parent["x"], dtype=np.float64)
        told = [np.asarray(c.sparsity) for c, _ in self.halving.this_rung(self.history)]
        seen = [parent] + [c for c, _ in self._asked_now] + told
        child = parent
        for _ in range(32):  # EvoPress skips duplicates of the parent and of earlier offspring
            child = self._mutate(parent)
            if not any(np.array_equal(child, s) for s in seen):
                break
        return child, {"origin": "offspring", "parents": [int(self.parent["id"])]}

    def _mutate(self, parent: np.ndarray) -> np.ndarray:
        k = self.switches
        switches = min(int(self.rng.integers(1, k + 1)), int(self.rng.integers(1, k + 1)))
        if self._allowed is None:
            return self._transfer(parent, switches)
        if self._removable and self.rng.random() < SWAP_SHARE:  # structured levels: depth moves too
            child = level_swap(parent, self._allowed, self.rng, switches)
        else:
            child, inexact = level_switch(parent, self._weights, self._allowed, self.rng, switches)
            child = settle(child, self._weights, self._allowed, self.space.target, frozen=inexact) if inexact else child
        return self.space.fill(child, self.rng) if self._removable else child  # spend a latency budget's slack

    def _transfer(self, x: np.ndarray, switches: int) -> np.ndarray:
        """A continuous level switch: move budget from one layer to another, equal amounts both ways."""
        w = self.space.weights()
        live = np.flatnonzero(w > 0)
        x = x.copy()
        for _ in range(switches):
            if live.size < 2:
                break
            a, b = self.rng.choice(live, size=2, replace=False)
            moved = self.step * min(w[a], w[b])
            x[a] += moved / w[a]
            x[b] -= moved / w[b]
        return self.space.repair(x)

    # ---- stages ----------------------------------------------------------------------------
    def _rescore(self) -> list[int]:
        """The parent meets the last stage's offspring again, on fresh data, when asked to."""
        return [int(self.parent["id"])] if self.reevaluate_parent and self.parent is not None else []

    def _generation_ended(self, ranked: Told) -> None:
        """The last stage's best replaces the parent if it beats it (always, when the parent was re-scored, and
        when the parent no longer meets a budget that moved since it was scored: a structured search's latency
        feedback tightens it, every offspring of an over-budget parent is then cut smaller than it, and the
        parent, bigger, would win every generation)."""
        if not ranked:
            return
        best, outcome = next(((c, o) for c, o in ranked if self._meets_budget(c.sparsity)), ranked[0])
        f = float(outcome.values[0])
        stale = self.parent is not None and not self._meets_budget(self.parent["x"])
        if self.parent is None or self.reevaluate_parent or stale or self.parent["f"] < f:
            self.parent = {"id": best.id, "x": list(best.sparsity), "f": f}

    def _meets_budget(self, x: list[float]) -> bool:
        """Within the space's budgets as they stand now (a structured space's can move during a search)."""
        return not isinstance(self.space, StructuredSpace) or self.space.feasible(x)

    def _candidate(self, ident: int, vector: np.ndarray, meta: CandidateMeta) -> Candidate:
        """Offspring are feasible by construction (no re-projection that could undo a switch), and a promoted
        candidate is the vector already scored, bit for bit, even where the space's budget has moved since
        (a structured search's latency feedback tightens it between stages: settling such a vector onto the
        new budget replaced it with an unrelated one, which the next stage then scored in its name)."""
        x = np.asarray(vector, dtype=np.float64)
        promoted = "promoted_from" in meta
        if not promoted and abs(self.space.achieved(x) - self.space.target) > self.space.tolerance(x):
            x = self.space.settle(x) if self.space.discrete else self.space.repair(x)
        if self.space.discrete:
            meta = {**meta, "levels": self.space.level_indices(x)}
        return Candidate(ident, [float(v) for v in x], meta=meta)

    def best(self) -> list[Candidate]:
        """The best candidate among those scored at the highest stage reached (values at lower
        fidelity are not comparable with it)."""
        return top_stage_best(self.history)

    def _observe(self, candidate: Candidate, outcome: Outcome) -> None:
        """Nothing to do per result: a stage is ranked once all of it is told."""

    def _extra_state(self) -> dict[str, Any]:
        return {
            "halving": self.halving.state_dict(),
            "parent": dict(self.parent) if self.parent is not None else None,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.halving.load_state_dict(state["halving"] if "halving" in state else self._old_stages(state))
        p = state["parent"]
        self.parent = None if p is None else {"id": int(p["id"]), "x": [float(v) for v in p["x"]], "f": float(p["f"])}

    def _old_stages(self, state: dict[str, Any]) -> dict[str, Any]:
        """The stages of a flat checkpoint: the same position, the fresh candidates counted from the
        history and the pending ones."""
        asked = [c for c, _ in self.history] + list(self.pending.values())
        return {
            "rung": state["generation"],
            "stage": state["stage"],
            "left": state["left"],
            "fresh": sum("promoted_from" not in c.meta for c in asked),
            "promote": state["promote"],
        }
