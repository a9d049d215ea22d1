"""ATP: sparsity rising linearly with depth, one slope, blocks pruned together."""

from __future__ import annotations

import numpy as np
import pytest

from prunehive.search.allocations import HEURISTICS, allocate, atp, atp_slopes, depths
from prunehive.search.space import Layer, SearchSpace


def blocks(n: int) -> list[Layer]:
    layers = [Layer("embed_proj", "linear", (32, 32), 1024, 1024)]
    for b in range(n):
        layers += [Layer(f"model.layers.{b}.self_attn.{p}", "linear", (32, 32), 1024, 1024) for p in "qkvo"]
        layers += [Layer(f"model.layers.{b}.mlp.{p}", "linear", (128, 32), 4096, 4096) for p in ("up", "down")]
    return layers


def test_depths_group_a_blocks_projections() -> None:
    space = SearchSpace(blocks(3), 0.7)
    assert depths(space).tolist() == [0] + [1] * 6 + [2] * 6 + [3] * 6


@pytest.mark.parametrize("levels", [None, [round(0.05 * i, 2) for i in range(20)]])
def test_atp_rises_with_depth_and_meets_the_budget(levels: list[float] | None) -> None:
    space = SearchSpace(blocks(6), 0.7, levels=levels)
    slopes = atp_slopes(space)
    assert len(slopes) == 6 and slopes[0] == 0.0 and slopes == sorted(slopes)
    np.testing.assert_allclose(atp(space, 0.0), space.uniform())
    for slope in slopes:
        x = atp(space, slope)
        assert abs(space.achieved(x) - 0.7) <= space.tolerance(x)
        per_block = [x[depths(space) == d].mean() for d in range(7)]
        if levels is None:  # on a level grid, rounding may swap neighbouring blocks by a level
            assert per_block == sorted(per_block)
        else:
            assert space.on_grid(x) and per_block[-1] >= per_block[0]
    steep = atp(space, slopes[-1])
    lo, hi = space.bounds()
    assert np.all(steep >= lo - 1e-9) and np.all(steep <= hi + 1e-9) and steep[-1] - steep[1] > 0.4
    np.testing.assert_allclose(allocate("atp", space), atp(space, 0.5 * slopes[-1]))
    assert "atp" in HEURISTICS


def test_a_single_block_is_uniform() -> None:
    space = SearchSpace([Layer("fc1", "linear", (4, 4), 16, 16)], 0.5)
    assert atp_slopes(space) == [0.0]
    np.testing.assert_allclose(atp(space), [0.5])
