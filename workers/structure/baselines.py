"""Heuristic structured candidates at a search's budget, as level vectors of its space.

- ``uniform`` (width): every sublayer at the same share of its units, attention heads (KV groups) and MLP
  channels alike (the smallest common share that meets the budgets), no sublayer removed; the units go by
  importance inside each sublayer.
- ``shortgpt`` (depth): whole blocks removed, those whose output is most like their input (highest
  input/output cosine, ShortGPT's block influence), until the budgets are met.
- ``combined``: half of the budgets by depth (as many ShortGPT blocks as fit in half of each budget),
  the rest by uniform width. Half is a fixed rule: neither heuristic tunes it, so neither is favoured.

The budgets are the space's: the params target and, where there is a latency table, the latency budget
(predicted by the table, as repair predicts it). Each ends with the space's repair, so a baseline meets
the same budgets as every searched candidate (a width that cannot reach a latency budget alone is
repaired by removing sublayers, as any candidate would be).
"""

from __future__ import annotations

import numpy as np

from prunehive.search.structured_space import STRUCTURED_BASELINES, StructuredSpace
from prunehive.workers.structure.engine import StructuredEngine


def _partial_levels(engine: StructuredEngine, i: int) -> int:
    """How many levels of slot ``i`` keep the sublayer (all but a final whole-sublayer removal)."""
    slot = engine.slots[i]
    return len(slot.grid) - (1 if slot.removed[-1] < 0 else 0)


def _progress(space: StructuredSpace, x: np.ndarray) -> list[float]:
    """How far ``x`` goes toward each budget the space has (1.0: that budget is just met)."""
    out = [space.achieved(x) / space.target] if space.target > 0 else []
    table, predicted = space.latency, space.predicted_ms(x)
    if table is not None and table.budget is not None and table.budget < 1.0 and predicted is not None:
        out.append((table.dense_ms - predicted) / (table.dense_ms * (1.0 - table.budget)))
    return out


def _shares(engine: StructuredEngine, i: int) -> list[float]:
    """The share of slot ``i``'s units each of its partial levels removes (0.0 first)."""
    slot = engine.slots[i]
    return [count / len(slot.order) for count in slot.removed[: _partial_levels(engine, i)]]


def _width(space: StructuredSpace, engine: StructuredEngine, fixed: np.ndarray) -> np.ndarray:
    """Free sublayers (level 0 in ``fixed``) all at one share of their units, heads and channels alike: the
    smallest share of the coarsest grid (KV groups, usually) that meets the budgets, each sublayer at its level
    nearest that share; the largest share where none does (the caller's repair then removes more)."""
    free = [i for i in range(space.dim) if fixed[i] == 0.0]
    if not free:
        return fixed.copy()
    shares = {i: _shares(engine, i) for i in free}
    x = fixed.copy()
    for share in min(shares.values(), key=len)[1:]:
        x = fixed.copy()
        for i in free:
            x[i] = space.grids[i][int(np.argmin([abs(f - share) for f in shares[i]]))]
        if min(_progress(space, x), default=1.0) >= 1.0 - 1e-9:
            return x
    return x


def _depth(engine: StructuredEngine, space: StructuredSpace, share: float) -> np.ndarray:
    """Blocks removed in ShortGPT order: until every budget is met (``share`` 1), or while no budget is
    gone past ``share`` of its way (``share`` below 1: ``combined``'s depth half)."""
    x = np.zeros(space.dim)
    scores = engine.pruner.scores.blocks
    order = sorted(scores, key=lambda i: scores[i])  # lowest 1 - cos first: the most redundant block
    for block in order[:-1]:  # one block always stays
        trial = x.copy()
        for i, s in enumerate(engine.slots):
            if s.block.index == block and space.grids[i][-1] == 1.0:
                trial[i] = 1.0
        if share >= 1.0 and min(_progress(space, x), default=1.0) >= 1.0 - 1e-9:
            break
        if share < 1.0 and max(_progress(space, trial), default=0.0) > share + 1e-9:
            break
        x = trial
    return x


def structured_baseline(engine: StructuredEngine, space: StructuredSpace, name: str) -> np.ndarray:
    """The named heuristic's level vector, repaired into the space's budgets."""
    if name == "uniform":
        x = _width(space, engine, np.zeros(space.dim))
    elif name == "shortgpt":
        x = _depth(engine, space, 1.0)
    elif name == "combined":
        x = _width(space, engine, _depth(engine, space, 0.5))
    else:
        raise ValueError(f"unknown structured baseline {name!r}; choose one of {', '.join(STRUCTURED_BASELINES)}")
    return space.within(x)
