"""Known answers and budget/bounds guarantees of the heuristic allocations."""

from __future__ import annotations

import numpy as np
import pytest

from prunehive.search.allocations import (
    ALLOCATIONS,
    allocate,
    erk,
    global_threshold,
    outlier_ratio,
    owl,
    uniform,
)
from prunehive.search.space import Layer, SearchSpace


def lin(name: str, out: int, inp: int) -> Layer:
    return Layer(name, "linear", (out, inp), out * inp, out * inp)


def conv(name: str, out: int, inp: int, k: int = 3) -> Layer:
    return Layer(name, "conv2d", (out, inp, k, k), out * inp * k * k, out * inp * k * k * 16)


LAYERS = [conv("c0", 16, 3), conv("c1", 32, 16), conv("c2", 64, 32), lin("fc", 10, 256)]


def random_scores(layers: list[Layer], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.abs(rng.normal(0, 1 + i, layer.params)) for i, layer in enumerate(layers)]


def assert_feasible(space: SearchSpace, x: np.ndarray) -> None:
    lo, hi = space.bounds()
    assert x.shape == (space.dim,)
    assert np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12)
    assert abs(space.achieved(x) - space.target) <= 1e-6


def test_uniform_is_target_everywhere() -> None:
    for budget in ("params", "flops"):
        space = SearchSpace(LAYERS, 0.6, budget=budget)
        np.testing.assert_allclose(uniform(space), 0.6)


def test_global_prunes_the_tiny_layer_most() -> None:
    layers = [lin("a", 20, 20), lin("b", 20, 20), lin("c", 10, 20)]
    rng = np.random.default_rng(0)
    scores = [rng.uniform(1, 2, 400), rng.uniform(0, 1e-6, 400), rng.uniform(1, 2, 200)]
    space = SearchSpace(layers, 0.5)
    x = global_threshold(space, scores)
    assert np.argmax(x) == 1
    assert x[1] == pytest.approx(0.99)  # pinned at its bound; repair moves the rest
    assert_feasible(space, x)
    # without the bound, the tiny layer is removed entirely and nothing else
    free = SearchSpace(layers, 0.4, min_density=0.0)
    np.testing.assert_allclose(global_threshold(free, scores), [0.0, 1.0, 0.0], atol=1e-12)


def test_global_exact_threshold_and_ties() -> None:
    layers = [lin("a", 1, 4), lin("b", 1, 4)]
    space = SearchSpace(layers, 0.5, min_density=0.0)
    # the 4 smallest of 1..8 are 1,2,3,4: three in a, one in b
    x = global_threshold(space, [np.array([1.0, 2.0, 3.0, 8.0]), np.array([4.0, 5.0, 6.0, 7.0])])
    np.testing.assert_allclose(x, [0.75, 0.25])
    # all tied: shared out in proportion, so uniform
    x = global_threshold(space, [np.ones(4), np.ones(4)])
    np.testing.assert_allclose(x, [0.5, 0.5])


def test_global_checks_scores() -> None:
    space = SearchSpace(LAYERS, 0.5)
    with pytest.raises(ValueError, match="scores for 4 layers"):
        global_threshold(space, random_scores(LAYERS)[:2])
    bad = random_scores(LAYERS)
    bad[0] = bad[0][:-1]
    with pytest.raises(ValueError, match="'c0'"):
        global_threshold(space, bad)


def test_erk_small_layers_are_denser() -> None:
    space = SearchSpace([lin("small", 64, 64), lin("mid", 128, 128), lin("big", 256, 256)], 0.9)
    x = erk(space)
    assert x[0] < x[1] < x[2]
    assert_feasible(space, x)
    # nothing was pinned or repaired: density is eps * sum(shape) / prod(shape), here 0.3, 0.15, 0.075
    np.testing.assert_allclose(1.0 - x, [0.3, 0.15, 0.075])


def test_erk_pins_layers_that_would_be_dense() -> None:
    layers = [lin("tiny", 2, 2), lin("big", 1000, 1000)]
    space = SearchSpace(layers, 0.5, min_density=0.0)
    x = erk(space)
    assert x[0] == pytest.approx(0.0)  # raw ERK would give density > 1
    assert_feasible(space, x)
    with_floor = SearchSpace(layers, 0.5, min_density=0.0, overrides={"tiny": (0.25, 1.0)})
    assert erk(with_floor)[0] == pytest.approx(0.25)


def test_owl_outliers_keep_more_weights() -> None:
    space = SearchSpace([lin(f"l{i}", 64, 64) for i in range(4)], 0.7)
    x = owl(space, [0.01, 0.05, 0.02, 0.10], lam=0.08)
    assert np.argsort(x).tolist() == [3, 1, 2, 0]
    # normalised to [0, 0.16] and centred: the spread is exactly 2 * lam
    assert x.max() - x.min() == pytest.approx(0.16)
    assert_feasible(space, x)
    np.testing.assert_allclose(owl(space, [0.03] * 4), uniform(space))
    np.testing.assert_allclose(owl(space, [0.01, 0.05, 0.02, 0.10], lam=0.0), uniform(space))


def test_owl_checks_inputs() -> None:
    space = SearchSpace(LAYERS, 0.5)
    with pytest.raises(ValueError, match="4 outlier ratios"):
        owl(space, [0.1, 0.2])
    with pytest.raises(ValueError, match="lam"):
        owl(space, [0.1, 0.2, 0.3, 0.4], lam=-1.0)


def test_outlier_ratio_hand_built() -> None:
    scores = np.array([1.0] * 18 + [20.0, 40.0])  # mean 3.9: 19.5 is the cut at m=5
    assert outlier_ratio(scores) == pytest.approx(0.1)
    assert outlier_ratio(scores, m=8.0) == pytest.approx(0.05)
    assert outlier_ratio(np.ones((3, 3))) == 0.0
    assert outlier_ratio(np.array([])) == 0.0


SPACES = [
    SearchSpace(LAYERS, 0.5),
    SearchSpace(LAYERS, 0.9, budget="flops"),
    SearchSpace(LAYERS, 0.8, min_density=0.05, min_sparsity=0.1, overrides={"fc": (0.0, 0.3)}),
    SearchSpace(LAYERS, 0.6, budget="flops", overrides={"c0": (0.0, 0.0), "c2": (0.7, 0.95)}),
    SearchSpace(LAYERS, 0.0),
]


@pytest.mark.parametrize("name", ALLOCATIONS)
@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.budget}-{s.target}-{len(s.overrides)}")
def test_every_allocation_meets_budget_and_bounds(name: str, space: SearchSpace) -> None:
    scores = random_scores(space.layers)
    ratios = [outlier_ratio(s, m=2.0) for s in scores]
    x = allocate(name, space, scores=scores, outlier_ratios=ratios)
    assert_feasible(space, x)


def test_allocate_errors() -> None:
    space = SearchSpace(LAYERS, 0.5)
    with pytest.raises(ValueError) as info:
        allocate("magic", space)
    assert str(info.value) == "unknown allocation 'magic'; choose one of uniform, global, erk, owl"
    with pytest.raises(ValueError, match="scores"):
        allocate("global", space)
    with pytest.raises(ValueError, match="outlier ratios"):
        allocate("owl", space)
    np.testing.assert_allclose(allocate("uniform", space), uniform(space))
    np.testing.assert_allclose(allocate("erk", space), erk(space))
