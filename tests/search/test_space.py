"""Properties of SearchSpace.repair: an exact projection onto the budget within the bounds."""

from __future__ import annotations

import numpy as np
import pytest

from prunehive.search.space import InfeasibleBudgetError, Layer, SearchSpace


def make_layers(n: int = 6, seed: int = 0) -> list[Layer]:
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(n):
        out, inp = int(rng.integers(4, 512)), int(rng.integers(4, 512))
        if i % 2:
            k = 3
            layers.append(Layer(f"conv{i}", "conv2d", (out, inp, k, k), out * inp * k * k, out * inp * k * k * 64))
        else:
            layers.append(Layer(f"fc{i}", "linear", (out, inp), out * inp, out * inp))
    return layers


def spaces() -> list[SearchSpace]:
    layers = make_layers()
    result = []
    for budget in ("params", "flops"):
        result.append(SearchSpace(layers, 0.5, budget=budget))
        result.append(SearchSpace(layers, 0.9, budget=budget, min_density=0.05, min_sparsity=0.1))
        result.append(
            SearchSpace(
                layers,
                0.7,
                budget=budget,
                overrides={"fc0": (0.0, 0.2), "conv1": (0.3, 0.95), "fc2": (0.6, 0.6)},
            )
        )
        result.append(SearchSpace(layers, 0.0, budget=budget))
    return result


SPACES = spaces()
IDS = [f"{s.budget}-{s.target}-{len(s.overrides)}" for s in SPACES]


def extreme_vectors(dim: int, rng: np.random.Generator) -> list[np.ndarray]:
    vs = [
        np.zeros(dim),
        np.ones(dim),
        -np.ones(dim),
        np.full(dim, np.nan),
        np.full(dim, 1e300),
        np.full(dim, -1e300),
        np.full(dim, np.inf),
        np.array([np.inf, -np.inf] * (dim // 2) + [np.nan] * (dim % 2)),
        np.array([1e300] + [-1e300] * (dim - 1)),
        np.array([1e9] + [0.0] * (dim - 1)),
        np.linspace(-5, 5, dim),
    ]
    vs += [rng.normal(0.5, 0.5, dim) for _ in range(50)]
    vs += [rng.uniform(0, 1, dim) for _ in range(50)]
    vs += [rng.normal(0, 1e3, dim) for _ in range(20)]
    with_nan = rng.uniform(0, 1, dim)
    with_nan[::2] = np.nan
    vs.append(with_nan)
    return vs


def assert_feasible(space: SearchSpace, x: np.ndarray) -> None:
    lo, hi = space.bounds()
    assert x.shape == (space.dim,)
    assert np.all(np.isfinite(x))
    assert np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12)
    assert abs(space.achieved(x) - space.target) <= 1e-6


@pytest.mark.parametrize("space", SPACES, ids=IDS)
def test_repair_meets_budget_and_bounds(space: SearchSpace) -> None:
    rng = np.random.default_rng(1)
    for v in extreme_vectors(space.dim, rng):
        assert_feasible(space, space.repair(v))


@pytest.mark.parametrize("space", SPACES, ids=IDS)
def test_repair_of_feasible_vector_is_itself(space: SearchSpace) -> None:
    rng = np.random.default_rng(2)
    for v in extreme_vectors(space.dim, rng):
        y = space.repair(v)
        np.testing.assert_allclose(space.repair(y), y, atol=1e-9)
    np.testing.assert_allclose(space.repair(space.uniform()), space.uniform(), atol=1e-9)


@pytest.mark.parametrize("space", SPACES, ids=IDS)
def test_repair_is_a_projection(space: SearchSpace) -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        v = rng.normal(0.5, 0.6, space.dim)
        x = space.repair(v)
        d = np.linalg.norm(x - v)
        for _ in range(30):
            y = space.repair(rng.uniform(-1, 2, space.dim))  # a random feasible point
            assert d <= np.linalg.norm(y - v) + 1e-9
            # and so is every point on the segment towards it (the feasible set is convex)
            t = rng.uniform()
            z = x + t * (y - x)
            assert d <= np.linalg.norm(z - v) + 1e-9


def test_repair_known_answer() -> None:
    layers = [Layer("a", "linear", (10, 10), 100, 100), Layer("b", "linear", (10, 10), 100, 100)]
    space = SearchSpace(layers, 0.5)
    np.testing.assert_allclose(space.repair([0.8, 0.4]), [0.7, 0.3])
    np.testing.assert_allclose(space.repair([2.0, 2.0]), [0.5, 0.5])
    np.testing.assert_allclose(space.repair([1e300, 0.2]), [0.99, 0.01])


def test_repair_with_lower_bound_at_target_terminates() -> None:
    # w @ lo can round just above the target; this used to loop forever
    layers = make_layers(7, seed=5)
    for target in np.linspace(0.01, 0.97, 60):
        space = SearchSpace(layers, float(target), min_sparsity=float(target))
        x = space.repair(np.zeros(space.dim))
        assert_feasible(space, x)


def test_zero_flops_layer() -> None:
    layers = make_layers(4) + [Layer("head", "linear", (2, 3), 6, 0)]
    space = SearchSpace(layers, 0.6, budget="flops")
    for v in extreme_vectors(space.dim, np.random.default_rng(4)):
        assert_feasible(space, space.repair(v))


def test_repair_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="expected a vector"):
        SPACES[0].repair([0.5])


def test_infeasible_bounds_raise() -> None:
    layers = make_layers(3)
    with pytest.raises(InfeasibleBudgetError):
        SearchSpace(layers, 0.9, min_density=0.5)
    with pytest.raises(InfeasibleBudgetError):
        SearchSpace(layers, 0.1, min_sparsity=0.2)
    names = [layer.name for layer in layers]
    with pytest.raises(InfeasibleBudgetError):
        SearchSpace(layers, 0.8, overrides={n: (0.0, 0.5) for n in names})
    assert issubclass(InfeasibleBudgetError, ValueError)


@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5, float("nan")])
def test_target_outside_unit_interval_raises(target: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        SearchSpace(make_layers(3), target)


def test_bad_bounds_raise() -> None:
    layers = make_layers(3)
    with pytest.raises(ValueError, match="unknown layers"):
        SearchSpace(layers, 0.5, overrides={"nope": (0.0, 0.9)})
    with pytest.raises(ValueError, match="lower bound exceeds"):
        SearchSpace(layers, 0.5, overrides={"fc0": (0.8, 0.2)})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SearchSpace(layers, 0.5, overrides={"fc0": (0.0, 1.5)})
    with pytest.raises(ValueError, match="no prunable layers"):
        SearchSpace([], 0.5)


def test_round_trip() -> None:
    for space in SPACES:
        data = space.to_dict()
        again = SearchSpace.from_dict(data)
        assert again == space
        assert again.to_dict() == data
        np.testing.assert_array_equal(again.bounds()[0], space.bounds()[0])
        np.testing.assert_array_equal(again.weights(), space.weights())
    layer = SPACES[0].layers[1]
    assert Layer.from_dict(layer.to_dict()) == layer
    assert isinstance(Layer.from_dict({**layer.to_dict(), "shape": list(layer.shape)}).shape, tuple)


def test_round_trip_through_json() -> None:
    import json

    space = SPACES[2]
    again = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert again == space
    np.testing.assert_allclose(again.repair(np.full(again.dim, 0.3)), space.repair(np.full(space.dim, 0.3)))
