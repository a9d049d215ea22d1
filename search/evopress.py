"""EvoPress (Sieberling et al., ICML 2025): (1+λ) evolution by level switches, with multi-step selection.

Each generation mutates the parent λ times (a few level switches each, so the budget holds), scores
the offspring cheaply at the first fidelity stage, promotes the best ``survivors[0]`` to the next,
more expensive stage, and so on; the best of the last stage replaces the parent if it beats it.
Stages are expressed through candidates: a promoted offspring is a new candidate with the same
vector and ``meta["fidelity"]`` one higher, so every trial row records the stage (and ``tokens``)
it was scored at. A stage is a barrier: the next one starts once every candidate of this one is told.

The checkpoint holds the parent, the generation's position and the ids to promote; the vectors of
promoted candidates are read back from the told history the runner hands back on resume.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from prunehive.search.halving import check_stages, top_stage_best
from prunehive.search.levels import level_switch, settle
from prunehive.search.options import EvoPressOptions
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, Outcome, Strategy


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
        self.fidelity, self.survivors = check_stages(fidelity, survivors)
        self.step = float(step)
        self.reevaluate_parent = bool(reevaluate_parent)
        self.initial = [space.uniform()] + [space.repair(np.asarray(v, dtype=np.float64)) for v in initial or []]
        self._weights = space.weights()
        self._allowed = space.allowed() if space.discrete else None
        self.generation = 0
        self.stage = 0
        self.left = len(self.initial)  # offspring still to ask at stage 0
        self.promote: list[int] = []  # ids to re-ask at the current stage (> 0)
        self.parent: dict[str, Any] | None = None  # {"id", "x", "f"}

    @property
    def stages(self) -> int:
        return len(self.survivors)

    # ---- proposals -----------------------------------------------------------------------
    def _propose(self, n: int) -> list[tuple[np.ndarray, dict[str, Any]]]:
        out: list[tuple[np.ndarray, dict[str, Any]]] = []
        while len(out) < n:
            if self.stage == 0 and self.left > 0:
                out.append(self._new_offspring(out))
            elif self.stage > 0 and self.promote:
                out.append(self._promoted(self.promote.pop(0)))
            elif not self.pending and not out:
                self._advance()
            else:
                break  # the stage's barrier: wait for its last results
        return out

    def _meta(self, origin: str, **extra: Any) -> dict[str, Any]:
        meta = {"origin": origin, "generation": self.generation, "fidelity": self.stage, **extra}
        if self.fidelity is not None:
            meta["tokens"] = self.fidelity[self.stage]
        return meta

    def _new_offspring(self, asked_now: list[tuple[np.ndarray, dict[str, Any]]]) -> tuple[np.ndarray, dict[str, Any]]:
        self.left -= 1
        if self.generation == 0:
            index = len(self.initial) - self.left - 1
            return self.initial[index], self._meta("uniform" if index == 0 else "warm-start")
        if self.parent is None:  # every start failed: look elsewhere rather than repeat them
            lo, hi = self.space.bounds()
            return self.space.repair(self.rng.uniform(lo, hi)), self._meta("random")
        parent = np.asarray(self.parent["x"], dtype=np.float64)
        seen = [parent] + [c for c, _ in asked_now] + [np.asarray(c.sparsity) for c, _ in self._this_generation()]
        child = parent
        for _ in range(32):  # EvoPress skips duplicates of the parent and of earlier offspring
            child = self._mutate(parent)
            if not any(np.array_equal(child, s) for s in seen):
                break
        return child, self._meta("offspring", parents=[int(self.parent["id"])])

    def _mutate(self, parent: np.ndarray) -> np.ndarray:
        k = self.switches
        switches = min(int(self.rng.integers(1, k + 1)), int(self.rng.integers(1, k + 1)))
        if self._allowed is None:
            return self._transfer(parent, switches)
        child, inexact = level_switch(parent, self._weights, self._allowed, self.rng, switches)
        return settle(child, self._weights, self._allowed, self.space.target, frozen=inexact) if inexact else child

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

    def _promoted(self, ident: int) -> tuple[np.ndarray, dict[str, Any]]:
        source = next(c for c, _ in reversed(self.history) if c.id == ident)
        origin = "parent" if self.parent is not None and ident == self.parent["id"] else "promoted"
        return np.asarray(source.sparsity, dtype=np.float64), self._meta(origin, promoted_from=ident)

    # ---- stages ----------------------------------------------------------------------------
    def _this_generation(self, stage: int | None = None) -> list[tuple[Candidate, Outcome]]:
        """Told candidates of the current generation (at ``stage``), newest first; they are the
        newest entries of the history, so the scan stops at the first older one."""
        out = []
        for cand, outcome in reversed(self.history):
            if cand.meta.get("generation") != self.generation:
                break
            if stage is None or cand.meta.get("fidelity") == stage:
                out.append((cand, outcome))
        return out

    def _ranked(self, stage: int) -> list[tuple[float, int]]:
        """(value, id) of this generation's complete results at ``stage``, best first."""
        scored = [
            (o.values[0], c.id)
            for c, o in self._this_generation(stage)
            if o.state == "complete" and math.isfinite(o.values[0])
        ]
        return sorted(scored, key=lambda vi: (-vi[0], vi[1]))

    def _advance(self) -> None:
        """The current stage is fully told: promote its best, or end the generation."""
        ranked = self._ranked(self.stage)
        last = self.stage == self.stages - 1
        if not last and ranked:
            self.stage += 1
            self.promote = [i for _, i in ranked[: self.survivors[self.stage - 1]]]
            if self.stage == self.stages - 1 and self.reevaluate_parent and self.parent is not None:
                self.promote.append(int(self.parent["id"]))
            return
        if last and ranked:
            f, ident = ranked[0]
            keep_old = self.parent is not None and not self.reevaluate_parent and self.parent["f"] >= f
            if not keep_old:
                x = next(c for c, _ in reversed(self.history) if c.id == ident).sparsity
                self.parent = {"id": ident, "x": list(x), "f": f}
        self.generation += 1
        self.stage = 0
        self.promote = []
        self.left = self.offspring if self.parent is not None else len(self.initial)

    def _candidate(self, ident: int, vector: np.ndarray, meta: dict[str, Any]) -> Candidate:
        """Offspring are feasible by construction (no re-projection that could undo a switch)."""
        x = np.asarray(vector, dtype=np.float64)
        if abs(self.space.achieved(x) - self.space.target) > self.space.tolerance(x):
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
            "generation": self.generation,
            "stage": self.stage,
            "left": self.left,
            "promote": list(self.promote),
            "parent": dict(self.parent) if self.parent is not None else None,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.generation = int(state["generation"])
        self.stage = int(state["stage"])
        self.left = int(state["left"])
        self.promote = [int(i) for i in state["promote"]]
        p = state["parent"]
        self.parent = None if p is None else {"id": int(p["id"]), "x": [float(v) for v in p["x"]], "f": float(p["f"])}
