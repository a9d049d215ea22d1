"""NSGA-II over (quality, second objective) with a per-individual target-sparsity gene.

Every candidate is repaired onto one exact budget, so with a fixed target the sparsity
objective would be constant and the front a single point. Each individual therefore carries
its own target in [min_target, max_target] as an extra gene and is repaired onto that target;
the front then trades quality against sparsity. Generation-synchronous, as NSGA-II's
environmental selection (DEAP ``selNSGA2``) needs the whole generation's results.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

import numpy as np
from deap import base, tools

from prunehive.search.evolution import Individual, deap_random
from prunehive.search.options import NSGA2Options
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, CandidateMeta, Outcome, Proposal, Strategy, load_meta


class MaxFitness2(base.Fitness):
    """Two maximised objectives (an importable stand-in for ``creator.create``)."""

    weights = (1.0, 1.0)


class Queued(TypedDict):
    """A proposal of this generation not yet asked: its genes (layers, then target) and meta."""

    x: list[float]
    meta: CandidateMeta


class NSGA2Strategy(Strategy):
    """NSGA-II: selNSGA2 survival, crowded binary tournaments, SBX and polynomial mutation.

    Options:
      population: individuals per generation (default 16, at most the budget).
      cxpb: probability a pair of parents is recombined by bounded SBX.
      eta_cx, eta_mut: distribution indices of SBX and polynomial mutation (larger = closer).
      indpb: per-gene mutation probability (default 1 / (layers + 1), the target gene included).
      min_target, max_target: range of the target-sparsity gene; default target - 0.2 .. target,
        clipped into what the per-layer bounds can reach.
      initial: allocations (the runner passes the heuristics) that open the first generation, each
        with its own achieved sparsity as its target gene.
    """

    name = "nsga2"
    Options = NSGA2Options
    n_objectives = 2

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        population: int = 16,
        cxpb: float = 0.9,
        eta_cx: float = 20.0,
        eta_mut: float = 20.0,
        indpb: float | None = None,
        min_target: float | None = None,
        max_target: float | None = None,
        initial: list[list[float]] | None = None,
    ) -> None:
        super().__init__(space, budget, seed)
        if population < 1:
            raise ValueError("population must be >= 1")
        if not 0.0 <= cxpb <= 1.0:
            raise ValueError(f"cxpb must be a probability, got {cxpb}")
        reach_lo, reach_hi = space.reachable()
        lo_t = space.target - 0.2 if min_target is None else float(min_target)
        hi_t = space.target if max_target is None else float(max_target)
        self.min_target = max(lo_t, reach_lo, 0.0)
        self.max_target = min(hi_t, reach_hi, 1.0 - 1e-9)
        if self.min_target > self.max_target:
            raise ValueError(
                f"target range {lo_t}..{hi_t} is empty within the reachable {reach_lo:.4f}..{reach_hi:.4f}"
            )
        self.population = min(population, budget)
        self.cxpb = float(cxpb)
        self.eta_cx = float(eta_cx)
        self.eta_mut = float(eta_mut)
        self.indpb = float(indpb) if indpb is not None else 1.0 / (space.dim + 1)
        self.initial = [list(map(float, v)) for v in (initial or [])][: self.population]
        self.generation = 0
        self.parents: list[dict[str, Any]] = []  # survivors: {"id", "x" (layers + target), "f"}
        self.offspring: list[dict[str, Any]] = []  # this generation's completed members
        self.gen_size = 0
        self.gen_told = 0
        self.queue: list[Queued] = []  # this generation's proposals not yet asked
        self._start_generation(self._initial_genomes())

    # ---- proposals: repaired onto each individual's own target -------------------------
    def _candidate(self, ident: int, vector: np.ndarray, meta: CandidateMeta) -> Candidate:
        x = self.space.with_target(meta["target"]).repair(vector)
        return Candidate(ident, [float(v) for v in x], meta=meta)

    def _propose(self, n: int) -> list[Proposal]:
        batch, self.queue = self.queue[:n], self.queue[n:]
        return [(np.asarray(item["x"][:-1], dtype=np.float64), item["meta"].copy()) for item in batch]

    # ---- generations ---------------------------------------------------------------------
    def _gene_bounds(self) -> tuple[list[float], list[float]]:
        lo, hi = self.space.bounds()
        low = [*map(float, lo), self.min_target]
        # DEAP's bounded operators divide by (up - low): keep fixed genes from dividing by zero.
        up = [max(float(h), float(lo_) + 1e-9) for lo_, h in zip(lo, hi, strict=True)]
        return low, [*up, max(self.max_target, self.min_target + 1e-9)]

    def _initial_genomes(self, seeded: bool = True) -> list[dict[str, Any]]:
        """The warm-start allocations, uniform ones at a few evenly spread targets, then uniform
        random points (only the random points when ``seeded`` is False)."""
        lo, hi = self.space.bounds()
        out = [
            {"x": [*v, float(self.space.achieved(np.asarray(v)))], "origin": "warm-start"}
            for v in (self.initial if seeded else [])
        ]
        k = min(4, self.population - len(out)) if seeded else 0
        targets = np.linspace(self.max_target, self.min_target, k) if k > 1 else [self.max_target][:k]
        out += [
            {"x": [*map(float, self.space.with_target(float(t)).uniform()), float(t)], "origin": "uniform"}
            for t in targets
        ]
        while len(out) < self.population:
            t = float(self.rng.uniform(self.min_target, self.max_target))
            out.append({"x": [*map(float, self.rng.uniform(lo, hi)), t], "origin": "random"})
        return out

    def _start_generation(self, genomes: list[dict[str, Any]]) -> None:
        self.queue = []
        for g in genomes:
            t = min(max(float(g["x"][-1]), self.min_target), self.max_target)
            meta: CandidateMeta = {"target": t, "generation": self.generation, "origin": g["origin"]}
            self.queue.append({"x": [*g["x"][:-1], t], "meta": meta})
        self.gen_size = len(self.queue)
        self.gen_told = 0
        self.offspring = []

    def _observe(self, candidate: Candidate, outcome: Outcome) -> None:
        self.gen_told += 1
        if outcome.state == "complete" and all(math.isfinite(v) for v in outcome.values):
            genes = [*candidate.sparsity, float(candidate.meta["target"])]
            self.offspring.append({"id": candidate.id, "x": genes, "f": [float(v) for v in outcome.values]})
        if not self.queue and self.gen_told >= self.gen_size:
            self._next_generation()

    def _next_generation(self) -> None:
        pool = [Individual(m["x"], MaxFitness2(tuple(m["f"])), m["id"]) for m in self.parents + self.offspring]
        self.generation += 1
        if not pool:  # everything failed so far: start over from random points
            self._start_generation(self._initial_genomes(seeded=False))
            return
        survivors = tools.selNSGA2(pool, min(self.population, len(pool)))
        self.parents = [{"id": s.ident, "x": list(s), "f": list(s.fitness.values)} for s in survivors]
        rank: dict[int, int] = {}
        for r, front in enumerate(tools.sortNondominated(survivors, len(survivors))):
            tools.emo.assignCrowdingDist(front)
            rank.update({ind.ident: r for ind in front})
        low, up = self._gene_bounds()
        children: list[dict[str, Any]] = []
        with deap_random(self.rng) as rnd:

            def pick() -> Individual:
                a, b = rnd.choice(survivors), rnd.choice(survivors)
                key_a = (-rank[a.ident], a.fitness.crowding_dist)
                key_b = (-rank[b.ident], b.fitness.crowding_dist)
                return a if key_a >= key_b else b

            while len(children) < self.population:
                c1, c2 = list(pick()), list(pick())
                if rnd.random() < self.cxpb:
                    c1, c2 = tools.cxSimulatedBinaryBounded(c1, c2, self.eta_cx, low, up)
                for c in (c1, c2):
                    tools.mutPolynomialBounded(c, self.eta_mut, low, up, self.indpb)  # in place
                    children.append({"x": [float(v) for v in c], "origin": "offspring"})
        self._start_generation(children[: self.population])

    # ---- state ---------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "parents": self.parents,
            "offspring": self.offspring,
            "gen_size": self.gen_size,
            "gen_told": self.gen_told,
            "queue": self.queue,
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        def members(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                {"id": int(m["id"]), "x": [float(v) for v in m["x"]], "f": [float(v) for v in m["f"]]} for m in items
            ]

        self.generation = int(state["generation"])
        self.parents = members(state["parents"])
        self.offspring = members(state["offspring"])
        self.gen_size = int(state["gen_size"])
        self.gen_told = int(state["gen_told"])
        self.queue = [{"x": [float(v) for v in q["x"]], "meta": load_meta(q["meta"])} for q in state["queue"]]
