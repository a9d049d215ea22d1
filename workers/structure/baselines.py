"""Heuristic structured candidates at a search's budget, as level vectors of its space.

- ``uniform`` (width): every sublayer at the same share of its units (the smallest common share that
  meets the budget), no sublayer removed; the units go by importance inside each sublayer.
- ``shortgpt`` (depth): whole blocks removed, those whose output is most like their input (highest
  input/output cosine, ShortGPT's block influence), until the budget is met.
- ``combined``: half of the budget by depth (as many ShortGPT blocks as fit in half the target), the
  rest by uniform width. Half is a fixed rule: neither heuristic tunes it, so neither is favoured.

Each ends with the space's repair, so a baseline meets the same budgets (params and latency) as every
searched candidate.
"""

from __future__ import annotations

import numpy as np

from prunehive.search.structured_space import STRUCTURED_BASELINES, StructuredSpace
from prunehive.workers.structure.engine import StructuredEngine


def _partial_levels(engine: StructuredEngine, i: int) -> int:
    """How many levels of slot ``i`` keep the sublayer (all but a final whole-sublayer removal)."""
    slot = engine.slots[i]
    return len(slot.grid) - (1 if slot.removed[-1] < 0 else 0)


def _width(space: StructuredSpace, engine: StructuredEngine, fixed: np.ndarray, target: float) -> np.ndarray:
    """Free sublayers (level 0 in ``fixed``) at one partial level per kind, the same in every block: of
    the (attention, MLP) pairs that meet ``target``, the one removing least (then the most even); the
    widest cut where none does (the caller's repair then removes more)."""
    free = [i for i in range(space.dim) if fixed[i] == 0.0]
    kinds = {k: [i for i in free if engine.slots[i].kind == k] for k in ("attention", "mlp")}
    counts = {k: max((_partial_levels(engine, i) for i in ix), default=1) for k, ix in kinds.items()}
    best: tuple[float, float, np.ndarray] | None = None
    x = fixed.copy()
    for ja in range(counts["attention"]):
        for jm in range(counts["mlp"]):
            x = fixed.copy()
            for k, j in (("attention", ja), ("mlp", jm)):
                for i in kinds[k]:
                    x[i] = space.grids[i][min(j, _partial_levels(engine, i) - 1)]
            removed = space.achieved(x)
            key = (removed, abs(ja / counts["attention"] - jm / counts["mlp"]))
            if removed >= target - 1e-12 and (best is None or key < best[:2]):
                best = (*key, x)
    return x if best is None else best[2]


def _depth(engine: StructuredEngine, space: StructuredSpace, target: float, over: bool) -> np.ndarray:
    """Blocks removed in ShortGPT order while the removal stays within ``target`` (``over``: until it
    reaches ``target``)."""
    x = np.zeros(space.dim)
    scores = engine.pruner.scores.blocks
    order = sorted(scores, key=lambda i: scores[i])  # lowest 1 - cos first: the most redundant block
    for block in order[:-1]:  # one block always stays
        trial = x.copy()
        for i, s in enumerate(engine.slots):
            if s.block.index == block and space.grids[i][-1] == 1.0:
                trial[i] = 1.0
        if over and space.achieved(x) >= target:
            break
        if not over and space.achieved(trial) > target + 1e-12:
            break
        x = trial
    return x


def structured_baseline(engine: StructuredEngine, space: StructuredSpace, name: str) -> np.ndarray:
    """The named heuristic's level vector, repaired into the space's budgets."""
    if name == "uniform":
        x = _width(space, engine, np.zeros(space.dim), space.target)
    elif name == "shortgpt":
        x = _depth(engine, space, space.target, over=True)
    elif name == "combined":
        x = _width(space, engine, _depth(engine, space, space.target / 2, over=False), space.target)
    else:
        raise ValueError(f"unknown structured baseline {name!r}; choose one of {', '.join(STRUCTURED_BASELINES)}")
    return space.within(x)
