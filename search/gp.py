"""Genetic programming over pruning-metric formulas (the Pruner-Zero idea) as an ask/tell strategy.

Each candidate is one formula (``Candidate.expression``, canonical text) applied at one fixed per-layer
allocation. DEAP's gp module supplies generation, crossover, mutation and the bloat limits; trees are
kept as canonical strings (pool, state) and rebuilt with ``PrimitiveTree.from_string`` against our
primitive set only after our own parser has read them, so the only text DEAP ever evaluates is a
numeric literal. Nothing is compiled here: workers interpret formulas (``workers/expressions.py``).
Steady state like ``evolution``: one child per ask slot, the pool updated on every tell.
"""

from __future__ import annotations

import copy
import math
import operator
import random
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import deap.gp as _deap_gp
import numpy as np
from deap import gp, tools

from prunehive.search.evolution import _DEAP_MODULES, MaxFitness, admit, deap_random
from prunehive.search.expr_canonical import canonicalize
from prunehive.search.expr_syntax import (
    ARITY,
    MAX_DEPTH,
    MAX_NODES,
    TERMINALS,
    Const,
    Expr,
    ExpressionError,
    Node,
    parse,
    terminals,
    to_string,
)
from prunehive.search.options import DEFAULT_SEEDS, GPMetricOptions
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, CandidateMeta, Outcome, Proposal, Strategy

_GP_MODULES = (*_DEAP_MODULES, _deap_gp)


def _interpreted_by_workers(*_: Any) -> None:
    raise NotImplementedError("formulas are interpreted by prunehive.workers.expressions, never gp.compile")


def primitive_set(constants: Sequence[float]) -> gp.PrimitiveSet:
    """Our operators and terminals under our names, so ``str(tree)`` is already our syntax."""
    pset = gp.PrimitiveSet("metric", len(TERMINALS))
    pset.renameArguments(**{f"ARG{i}": name for i, name in enumerate(TERMINALS)})
    for op, arity in ARITY.items():
        pset.addPrimitive(_interpreted_by_workers, arity, name=op)
    for value in dict.fromkeys(float(c) for c in constants):
        pset.addTerminal(value, name=to_string(Const(value)))
    return pset


class GPTree(gp.PrimitiveTree):
    """A DEAP tree carrying the ``fitness`` its selection operators read (an importable class, no creator)."""

    def __init__(self, content: Any, fitness: MaxFitness | None = None, ident: int = -1) -> None:
        super().__init__(content)
        self.fitness = fitness if fitness is not None else MaxFitness()
        self.ident = ident


def ranking_key(e: Expr) -> str:
    """One key for formulas that rank every layer's weights alike (up to float rounding and ties):
    a positive scale or shift, minmax and zscore at the root change no ranking, and sqr, sqrt and
    log at the root rank like abs."""
    try:
        while True:
            root = canonicalize(Node("minmax", (e,)))  # canonical minmax drops scale, shift, minmax, zscore
            e = root.args[0] if isinstance(root, Node) and root.op == "minmax" else root
            if not (isinstance(e, Node) and e.op in ("sqr", "sqrt", "log")):
                return to_string(e)
            e = canonicalize(Node("abs", e.args))
    except ExpressionError:  # only at the depth limit
        return to_string(e)


class GPMetricStrategy(Strategy):
    """Steady-state GP over formulas at a fixed allocation; a formula ranked like one already asked
    is never asked again.

    Options:
      allocation: per-layer sparsities every candidate uses (default: the space's uniform one).
      population: pool size; the first ``max(population, len(seed_expressions))`` asks are the seeds
        then ramped half-and-half random trees.
      cxpb / mutpb: probability of one-point crossover; of mutation after it (always without it).
        Mutation is uniform subtree, node replacement or shrink, chosen evenly.
      min_depth / max_depth: depth range of random trees; max_height / max_nodes: bloat limits.
      tournsize: tournament size for parents and, reversed, the pool member a child replaces.
      elitism: the best ``elitism`` pool members are never replaced.
      constants: the fixed numeric terminals. seed_expressions: formulas asked first.
      max_retries: children tried before a fresh random tree is injected instead.
    """

    name = "gp-metric"
    Options = GPMetricOptions
    n_objectives = 1

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        allocation: Sequence[float] | None = None,
        population: int = 20,
        cxpb: float = 0.7,
        mutpb: float = 0.3,
        min_depth: int = 1,
        max_depth: int = 3,
        max_height: int = 8,
        max_nodes: int = 40,
        tournsize: int = 3,
        elitism: int = 2,
        constants: Sequence[float] = (0.5, 1.0, 2.0),
        seed_expressions: Sequence[str] = DEFAULT_SEEDS,
        max_retries: int = 20,
    ) -> None:
        super().__init__(space, budget, seed)
        if population < 1 or tournsize < 1 or elitism < 0 or max_retries < 1:
            raise ValueError("population, tournsize and max_retries must be >= 1, elitism >= 0")
        if not 1 <= min_depth <= max_depth <= max_height <= MAX_DEPTH:
            raise ValueError(f"need 1 <= min_depth <= max_depth <= max_height <= {MAX_DEPTH}")
        if not 1 <= max_nodes <= MAX_NODES:
            raise ValueError(f"max_nodes must lie in 1..{MAX_NODES}")
        for label, p in (("cxpb", cxpb), ("mutpb", mutpb)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{label} must be a probability, got {p}")
        if not all(math.isfinite(c) for c in constants):
            raise ValueError("constants must be finite numbers")
        self.allocation = self._check_allocation(allocation)
        self.population, self.tournsize, self.max_retries = int(population), int(tournsize), int(max_retries)
        self.elitism = min(int(elitism), max(0, self.population - 1))
        self.cxpb, self.mutpb = float(cxpb), float(mutpb)
        self.min_depth, self.max_depth, self.max_height, self.max_nodes = min_depth, max_depth, max_height, max_nodes
        self.pset = primitive_set(constants)
        self.seeds: list[str] = []
        for text in seed_expressions:
            node = canonicalize(parse(text))
            if not terminals(node):
                raise ValueError(f"seed expression {text!r} uses none of {', '.join(TERMINALS)}")
            if ranking_key(node) not in {ranking_key(parse(s)) for s in self.seeds}:
                self.seeds.append(to_string(node))
        self.first_generation = max(self.population, len(self.seeds))
        limit = self._limited
        self._crossover = limit(gp.cxOnePoint)
        grow = partial(gp.genGrow, min_=0, max_=2)
        self._mutations: tuple[Callable[..., list[GPTree]], ...] = (
            limit(partial(gp.mutUniform, expr=grow, pset=self.pset)),
            limit(partial(gp.mutNodeReplacement, pset=self.pset)),
            limit(gp.mutShrink),
        )
        self.seeded = 0  # first-generation proposals made
        self.pool: list[dict[str, Any]] = []  # evaluated parents: {"id", "expr", "f"}
        self.cache: dict[str, float | None] = {}  # fitness by ranking key; None = failed (the worst)

    def _check_allocation(self, allocation: Sequence[float] | None) -> list[float]:
        if allocation is None:
            return [float(x) for x in self.space.uniform()]
        given = np.asarray(allocation, dtype=np.float64)
        if given.shape != (self.space.dim,):
            raise ValueError(f"allocation needs {self.space.dim} per-layer sparsities, got {given.shape}")
        repaired = self.space.repair(given)
        if float(np.max(np.abs(repaired - given))) > 1e-6:
            raise ValueError("allocation is outside the per-layer bounds or misses the target sparsity")
        return [float(x) for x in repaired]

    def _limited(self, op: Callable[..., Any]) -> Callable[..., list[GPTree]]:
        """Koza's static limits: a child over the height or size limit is replaced by a parent."""
        by_height = gp.staticLimit(operator.attrgetter("height"), self.max_height)
        return gp.staticLimit(len, self.max_nodes)(by_height(op))  # type: ignore[no-any-return]

    def _tree(self, text: str) -> gp.PrimitiveTree:
        """Rebuild a tree; our parser reads the text first, so from_string only ever meets known tokens."""
        if to_string(parse(text)) != text:
            raise ExpressionError(f"{text!r} is not in canonical form")
        return gp.PrimitiveTree.from_string(text, self.pset)

    # ---- proposals -----------------------------------------------------------------------
    def _propose(self, n: int) -> list[Proposal]:
        taken = set(self.cache) | {ranking_key(parse(str(c.expression))) for c in self.pending.values()}
        out: list[Proposal] = []
        with deap_random(self.rng, _GP_MODULES) as r:
            parents = [GPTree(self._tree(m["expr"]), MaxFitness((m["f"],)), m["id"]) for m in self.pool]
            for _ in range(n):
                expression, key, meta = self._next(r, parents, taken)
                taken.add(key)
                out.append((np.asarray(self.allocation), {"expression": expression, **meta}))
        return out

    def _candidate(self, ident: int, vector: np.ndarray, meta: CandidateMeta) -> Candidate:
        expression = meta.pop("expression")
        return Candidate(ident, list(self.allocation), expression, meta)

    def _next(self, r: random.Random, parents: list[GPTree], taken: set[str]) -> tuple[str, str, CandidateMeta]:
        if self.seeded < self.first_generation:
            index, self.seeded = self.seeded, self.seeded + 1
            if index < len(self.seeds) and (key := ranking_key(parse(self.seeds[index]))) not in taken:
                return self.seeds[index], key, {"origin": "seed"}
            return (*self._fresh(taken), {"origin": "random"})
        if parents:
            for _ in range(self.max_retries):
                child, ids = self._offspring(r, parents)
                if (got := self._accept(child, taken)) is not None:
                    return (*got, {"origin": "offspring", "parents": ids})
        # No pool yet, or the children are all formulas already asked: keep diversity with a new tree.
        return (*self._fresh(taken), {"origin": "injected" if parents else "random"})

    def _fresh(self, taken: set[str]) -> tuple[str, str]:
        for attempt in range(5 * self.max_retries):
            depth = min(self.max_height, self.max_depth + attempt // self.max_retries)  # deeper if crowded
            got = self._accept(GPTree(gp.genHalfAndHalf(self.pset, self.min_depth, depth)), taken)
            if got is not None:
                return got
        raise RuntimeError(f"no new formula in {5 * self.max_retries} random trees; raise max_depth or max_nodes")

    def _offspring(self, r: random.Random, parents: list[GPTree]) -> tuple[GPTree, list[int]]:
        pa, pb = tools.selTournament(parents, 2, self.tournsize)
        child, other = copy.deepcopy(pa), copy.deepcopy(pb)
        crossed = pa.ident != pb.ident and r.random() < self.cxpb
        if crossed:
            child, other = self._crossover(child, other)
            if r.random() < 0.5:
                child = other
        if not crossed or r.random() < self.mutpb:
            (child,) = r.choice(self._mutations)(child)
        return child, [pa.ident, pb.ident] if crossed else [pa.ident]

    def _accept(self, tree: gp.PrimitiveTree, taken: set[str]) -> tuple[str, str] | None:
        """The canonical text and ranking key of a new, non-constant formula within the limits, else None."""
        if len(tree) > self.max_nodes or tree.height > self.max_height:
            return None
        try:
            node = canonicalize(parse(str(tree)))
        except ExpressionError:
            return None
        key = ranking_key(node)
        if not terminals(node) or key in taken:
            return None
        return to_string(node), key

    # ---- feedback ------------------------------------------------------------------------
    def _observe(self, candidate: Candidate, outcome: Outcome) -> None:
        ok = outcome.state == "complete" and math.isfinite(outcome.values[0])
        self.cache[ranking_key(parse(str(candidate.expression)))] = float(outcome.values[0]) if ok else None
        if not ok:
            return  # failures get the worst fitness: never parents, never asked again
        member = {"id": candidate.id, "expr": candidate.expression, "f": float(outcome.values[0])}
        self.pool = admit(self.pool, member, self.population, self.elitism, self.tournsize, self.rng)

    def _extra_state(self) -> dict[str, Any]:
        return {"seeded": self.seeded, "pool": [dict(m) for m in self.pool]}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.seeded = int(state["seeded"])
        self.pool = [{"id": int(m["id"]), "expr": str(m["expr"]), "f": float(m["f"])} for m in state["pool"]]
        for m in self.pool:
            self._tree(m["expr"])  # a tampered state fails here, before DEAP reads it
        self.cache = {}
        for cand, outcome in self.history:
            ok = outcome.state == "complete" and math.isfinite(outcome.values[0])
            self.cache[ranking_key(parse(str(cand.expression)))] = float(outcome.values[0]) if ok else None
