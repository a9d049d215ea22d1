"""A steady-state genetic algorithm built from DEAP's functional operators, inside ask/tell.

Steady state (one child per ask slot, the pool updated on every tell) keeps every worker busy
with no generation barrier. DEAP draws from Python's ``random``; ``deap_random`` binds a
private ``random.Random`` seeded from the strategy's numpy RNG into DEAP's operator modules
while they run, so the only RNG state is the base class's, which already round-trips as JSON.
No ``deap.creator``: the fitness/individual classes below are plain importable classes.

With ``fidelity``/``survivors`` it turns generational (EvoPress's multi-step selection): each
generation (a rung of :mod:`prunehive.search.halving`) is scored at the first stage, its best are
promoted stage by stage, and only last-stage results enter the pool that parents are drawn from.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import deap.tools.crossover as _deap_crossover
import deap.tools.emo as _deap_emo
import deap.tools.mutation as _deap_mutation
import deap.tools.selection as _deap_selection
import numpy as np
from deap import base, tools

from prunehive.search.halving import Halving, make_halving, staged_candidate, top_stage_best
from prunehive.search.levels import level_switch, settle
from prunehive.search.options import EvolutionOptions
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, CandidateMeta, Outcome, Proposal, Strategy

_DEAP_MODULES = (_deap_crossover, _deap_mutation, _deap_selection, _deap_emo)
_DEAP_LOCK = threading.Lock()


def admit(
    pool: list[dict[str, Any]],
    member: dict[str, Any],
    population: int,
    elitism: int,
    tournsize: int,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    """Steady-state replacement: add ``member`` (``{"id", "f", ...}``); once the pool is over
    ``population``, a reverse tournament among all but the ``elitism`` best picks one to drop."""
    pool = [*pool, member]
    if len(pool) <= population:
        return pool
    replaceable = sorted(pool, key=lambda m: (-m["f"], m["id"]))[elitism:]
    drawn = rng.choice(len(replaceable), size=min(tournsize, len(replaceable)), replace=False)
    victim = min((replaceable[int(i)] for i in drawn), key=lambda m: (m["f"], -m["id"]))
    return [m for m in pool if m["id"] != victim["id"]]


@contextmanager
def deap_random(rng: np.random.Generator, modules: tuple[Any, ...] = _DEAP_MODULES) -> Iterator[random.Random]:
    """Make DEAP's operators draw from a private ``random.Random`` seeded from ``rng``.

    The global ``random`` module is left untouched; the lock keeps two strategies in different
    threads from swapping each other's generator mid-operator.
    """
    private = random.Random(int(rng.integers(0, 2**63)))
    with _DEAP_LOCK:
        saved = [module.random for module in modules]
        for module in modules:
            module.random = private  # type: ignore[attr-defined]
        try:
            yield private
        finally:
            for module, original in zip(modules, saved, strict=True):
                module.random = original  # type: ignore[attr-defined]


class MaxFitness(base.Fitness):
    """Single maximised objective (what ``creator.create`` would make, but importable)."""

    weights = (1.0,)


class Individual(list):  # type: ignore[type-arg]
    """A per-layer vector with the ``fitness`` attribute DEAP's selection operators read."""

    def __init__(self, genes: list[float], fitness: base.Fitness, ident: int = -1) -> None:
        super().__init__(genes)
        self.fitness = fitness
        self.ident = ident


class EvolutionStrategy(Strategy):
    """Steady-state GA: tournament parents, blend crossover, Gaussian mutation, repair.

    Options:
      population: size of the parent pool (default 16, at most the budget); the first
        ``population`` asks are the uniform allocation plus uniform random points.
      cxpb: probability a child comes from blend crossover of two tournament winners.
      mutpb: probability of Gaussian mutation (always applied when crossover was not).
      sigma: mutation standard deviation, in sparsity units.
      indpb: per-layer mutation probability (default 2 / number of layers, at most 1).
      alpha: cxBlend's extrapolation range.
      tournsize: tournament size for picking parents and, reversed, the member a child replaces.
      elitism: the best ``elitism`` pool members are never replaced.
      mutation: ``gaussian`` (per-layer noise, then repair) or ``switch`` (EvoPress's level switch: one
        layer a level up, another down, so the budget holds); default: switch in a discrete space.
      fidelity, survivors: multi-step selection: tokens per stage and candidates promoted after each.
      rung: candidates per generation at the first stage (default: ``population``; the first
        generation is the ``population`` seeds).
    """

    name = "evolution"
    Options = EvolutionOptions
    n_objectives = 1

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        population: int = 16,
        cxpb: float = 0.7,
        mutpb: float = 0.3,
        sigma: float = 0.1,
        indpb: float | None = None,
        alpha: float = 0.3,
        tournsize: int = 3,
        elitism: int = 2,
        initial: list[list[float]] | None = None,
        mutation: str | None = None,
        fidelity: list[int] | None = None,
        survivors: list[int] | None = None,
        rung: int | None = None,
    ) -> None:
        super().__init__(space, budget, seed)
        if population < 1 or tournsize < 1 or elitism < 0:
            raise ValueError("population and tournsize must be >= 1, elitism >= 0")
        for label, p in (("cxpb", cxpb), ("mutpb", mutpb)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{label} must be a probability, got {p}")
        if sigma <= 0:
            raise ValueError("sigma must be positive")
        self.mutation = mutation or ("switch" if space.discrete else "gaussian")
        if self.mutation not in ("gaussian", "switch") or (self.mutation == "switch" and not space.discrete):
            raise ValueError(f"mutation must be 'gaussian', or 'switch' over levels; got {mutation!r}")
        self.population = min(population, budget)
        self.cxpb = float(cxpb)
        self.mutpb = float(mutpb)
        self.sigma = float(sigma)
        self.indpb = float(indpb) if indpb is not None else min(1.0, 2.0 / space.dim)
        self.alpha = float(alpha)
        self.tournsize = int(tournsize)
        self.elitism = min(int(elitism), max(0, self.population - 1))
        # Warm start: known-good allocations (the runner passes the heuristics) join the first generation.
        self.initial = [list(map(float, v)) for v in (initial or [])][: max(0, self.population - 1)]
        self.seeded = 0  # how many of the first generation's points were proposed
        self.pool: list[dict[str, Any]] = []  # evaluated members: {"id", "x", "f"}
        self.halving: Halving | None = make_halving(
            fidelity, survivors, rung, default=self.population, first=self.population
        )

    # ---- proposals -----------------------------------------------------------------------
    def _propose(self, n: int) -> list[Proposal]:
        if self.halving is not None:
            return self.halving.propose(n, self, lambda _k, _i: self._next())
        return [self._next() for _ in range(n)]

    def _next(self) -> Proposal:
        """A seed of the first generation, a random point while the pool is empty, else offspring."""
        lo, hi = self.space.bounds()
        if self.seeded < self.population:
            index = self.seeded
            self.seeded += 1
            if index == 0:
                return self.space.uniform(), {"origin": "uniform"}
            if index <= len(self.initial):
                return np.asarray(self.initial[index - 1]), {"origin": "warm-start"}
            return self.rng.uniform(lo, hi), {"origin": "random"}
        if not self.pool:  # nothing evaluated yet (all pending or failed): keep exploring
            return self.rng.uniform(lo, hi), {"origin": "random"}
        return self._offspring()

    def _individuals(self) -> list[Individual]:
        return [Individual(list(m["x"]), MaxFitness((m["f"],)), m["id"]) for m in self.pool]

    def _offspring(self) -> Proposal:
        with deap_random(self.rng) as r:
            pa, pb = tools.selTournament(self._individuals(), 2, self.tournsize)
            child, other = list(pa), list(pb)
            crossed = pa.ident != pb.ident and r.random() < self.cxpb
            if crossed:
                child, other = tools.cxBlend(child, other, self.alpha)
                if r.random() < 0.5:
                    child = other
            if not crossed or r.random() < self.mutpb:
                before = list(child)
                for _ in range(32):  # a mutation that touches no layer would re-evaluate a parent
                    child = self._mutate(child)
                    if child != before:
                        break
        parents = [pa.ident] if not crossed else [pa.ident, pb.ident]
        return np.asarray(child, dtype=np.float64), {"origin": "offspring", "parents": parents}

    def _mutate(self, genes: list[float]) -> list[float]:
        if self.mutation == "gaussian":
            (child,) = tools.mutGaussian(genes, 0.0, self.sigma, self.indpb)
            return list(child)
        w, allowed = self.space.weights(), self.space.allowed()
        x = genes if self.space.on_grid(genes) else self.space.repair(np.asarray(genes))  # a blend is off-grid
        child, inexact = level_switch(np.asarray(x, dtype=np.float64), w, allowed, self.rng)
        if inexact:
            child = settle(child, w, allowed, self.space.target, frozen=inexact)
        return [float(v) for v in child]

    def _candidate(self, ident: int, vector: np.ndarray, meta: CandidateMeta) -> Candidate:
        """A level switch already meets the budget and a promoted candidate is the vector already
        scored: neither is repaired again."""
        return staged_candidate(self.space, ident, vector, meta, keep_on_grid=True)

    # ---- feedback ------------------------------------------------------------------------
    def best(self) -> list[Candidate]:
        return top_stage_best(self.history) if self.halving is not None else super().best()

    def _observe(self, candidate: Candidate, outcome: Outcome) -> None:
        if outcome.state != "complete" or not math.isfinite(outcome.values[0]):
            return  # failures never become parents
        if self.halving is not None and candidate.meta["fidelity"] != self.halving.last:
            return  # only full-stage results compete for the pool
        member = {"id": candidate.id, "x": list(candidate.sparsity), "f": float(outcome.values[0])}
        self.pool = admit(self.pool, member, self.population, self.elitism, self.tournsize, self.rng)

    def _extra_state(self) -> dict[str, Any]:
        state = {"seeded": self.seeded, "pool": [dict(m) for m in self.pool]}
        return state | ({"halving": self.halving.state_dict()} if self.halving is not None else {})

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.seeded = int(state["seeded"])
        if self.halving is not None:
            self.halving.load_state_dict(state["halving"])
        self.pool = [{"id": int(m["id"]), "x": [float(v) for v in m["x"]], "f": float(m["f"])} for m in state["pool"]]
