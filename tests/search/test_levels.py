"""The discrete search space: repair lands on one level per layer as close to the budget as the grid
allows, and a level switch keeps the budget exact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prunehive.search.levels import level_swap, level_switch
from prunehive.search.registry import make_strategy
from prunehive.search.space import Layer, SearchSpace
from prunehive.search.testing import Driver, check_strategy, make_objective, synthetic_space

LEVELS = [round(0.05 * i, 2) for i in range(20)]  # 0.0 .. 0.95, the database's default grid


def blocks(n: int = 4) -> list[Layer]:
    """A transformer's shape: per block four equal attention projections and two larger MLP ones."""
    layers = []
    for b in range(n):
        layers += [Layer(f"layers.{b}.attn.{p}", "linear", (64, 64), 4096, 4096) for p in "qkvo"]
        layers += [Layer(f"layers.{b}.mlp.{p}", "linear", (256, 64), 16384, 16384) for p in ("up", "down")]
    return layers


def discrete_spaces() -> list[SearchSpace]:
    return [
        SearchSpace(blocks(), 0.7, levels=LEVELS),
        SearchSpace(blocks(), 0.63, budget="flops", levels=LEVELS),
        synthetic_space().with_levels(LEVELS),
        SearchSpace(blocks(2), 0.5, levels=LEVELS, overrides={"layers.0.attn.q": (0.0, 0.0)}),
    ]


def finest_step(space: SearchSpace, x: np.ndarray) -> float:
    """Half the smallest budget change one level move of any layer can make, towards the target."""
    w, allowed = space.weights(), space.allowed()
    gap = space.target - space.achieved(x)
    steps = []
    for i, a in enumerate(allowed):
        side = a[a > x[i] + 1e-12] if gap > 0 else a[a < x[i] - 1e-12]
        if side.size and w[i] > 0:
            steps.append(w[i] * abs((side.min() if gap > 0 else side.max()) - x[i]))
    return 0.5 * min(steps)


@pytest.mark.parametrize("space", discrete_spaces(), ids=lambda s: f"{s.budget}-{s.target}-{s.dim}")
def test_repair_lands_on_levels_within_half_the_finest_step(space: SearchSpace) -> None:
    rng = np.random.default_rng(0)
    allowed = space.allowed()
    for v in [np.zeros(space.dim), np.ones(space.dim), np.full(space.dim, np.nan)] + [
        rng.uniform(-0.5, 1.5, space.dim) for _ in range(100)
    ]:
        x = space.repair(v)
        assert all(np.any(np.isclose(a, xi, atol=0)) for a, xi in zip(allowed, x, strict=True)), x
        error = abs(space.achieved(x) - space.target)
        assert error <= finest_step(space, x) + 1e-12 and error <= space.tolerance(x)
        assert space.on_grid(x)
        np.testing.assert_array_equal(space.repair(x), space.repair(space.repair(x)))


def test_equal_layers_meet_the_budget_to_the_bit() -> None:
    space = SearchSpace(blocks(), 0.7, levels=LEVELS)
    x = space.uniform()
    assert space.achieved(x) == pytest.approx(0.7, abs=1e-12)
    assert space.level_indices(x) == [14] * space.dim


def test_a_level_switch_keeps_the_budget_exact() -> None:
    space = SearchSpace(blocks(), 0.7, levels=LEVELS)
    w, allowed = space.weights(), space.allowed()
    rng = np.random.default_rng(1)
    x = space.repair(rng.uniform(0.4, 0.95, space.dim))
    for _ in range(200):
        child, inexact = level_switch(x, w, allowed, rng, switches=3)
        assert inexact == [] and not np.array_equal(child, x)
        assert abs(space.achieved(child) - space.achieved(x)) <= 1e-12
        moved = np.flatnonzero(child != x)
        steps = np.abs(child[moved] - x[moved]) / 0.05
        assert len(moved) >= 2 and np.allclose(steps, np.round(steps)) and steps.sum() <= 6 + 1e-9
        x = child


def test_a_level_swap_exchanges_levels_each_on_the_others_grid() -> None:
    """Structured sublayers: a removed one (1.0) comes back while a kept one goes; equal sizes keep the budget."""
    attention, mlp = np.array([0.0, 0.25, 0.5, 0.75, 1.0]), np.array([0.0, 0.125, 0.5, 1.0])
    allowed = [attention, mlp] * 4
    rng = np.random.default_rng(0)
    x = np.array([1.0, 1.0, 0.0, 0.5, 0.25, 0.0, 0.0, 0.125])
    for _ in range(100):
        child = level_swap(x, allowed, rng, swaps=1)
        assert sorted(child) == sorted(x) and not np.array_equal(child, x)
        assert all(np.any(g == v) for g, v in zip(allowed, child, strict=True))
        x = child


def test_levels_round_trip_and_bad_grids() -> None:
    space = SearchSpace(blocks(1), 0.5, levels=LEVELS)
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space and again.levels == LEVELS
    assert "levels" not in SearchSpace(blocks(1), 0.5).to_dict()  # a continuous space's JSON is unchanged
    with pytest.raises(ValueError, match="strictly increasing"):
        SearchSpace(blocks(1), 0.5, levels=[0.5, 0.2])
    with pytest.raises(ValueError, match="no pruning level within its bounds"):
        SearchSpace(blocks(1), 0.5, levels=LEVELS, overrides={"layers.0.attn.q": (0.31, 0.34)})


def test_evolution_switches_levels_in_a_discrete_space() -> None:
    space = SearchSpace(blocks(), 0.7, levels=LEVELS)
    strategy = make_strategy("evolution", space, 60, 0)
    Driver(strategy, make_objective(space, 1), workers=3).run()
    for cand, _ in strategy.history:
        assert space.on_grid(cand.sparsity) and cand.meta["levels"] == space.level_indices(cand.sparsity)
    with pytest.raises(ValueError, match="switch"):
        make_strategy("evolution", synthetic_space(), 10, 0, mutation="switch")


def test_evolution_conformance_over_levels() -> None:
    check_strategy(lambda space, budget, seed: make_strategy("evolution", space.with_levels(LEVELS), budget, seed))
