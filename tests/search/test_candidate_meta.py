"""Every key a strategy records in ``Candidate.meta`` is declared in ``CandidateMeta`` with the type it
has, so the trial rows and checkpoints hold only what the TypedDict documents."""

from __future__ import annotations

from typing import Any, get_args, get_origin, get_type_hints

import pytest

from prunehive.search.registry import STRATEGIES, make_strategy
from prunehive.search.strategy import Candidate, CandidateMeta
from prunehive.search.testing import Driver, make_objective, synthetic_space

LEVELS = [round(0.05 * i, 2) for i in range(20)]
STAGES: dict[str, Any] = {"fidelity": [1, 2, 4], "survivors": [5, 2, 1]}
# Each strategy with the options that make it write all of its keys (stages, warm starts, a prior).
RUNS: list[tuple[str, bool, dict[str, Any]]] = [
    ("random", True, STAGES),
    ("bayesian", True, {**STAGES, "n_startup_trials": 4}),
    ("evolution", True, {**STAGES, "population": 6}),
    ("evopress", True, {**STAGES, "reevaluate_parent": True}),
    ("nsga2", False, {"population": 8}),
    ("rl", False, {"updates_per_tell": 1, "warmup": 4, "hidden": 8, "batch_size": 8}),
    ("gp-metric", False, {}),
]
HINTS = get_type_hints(CandidateMeta)


def _has_type(value: object, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_has_type(v, item) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and not isinstance(value, bool)


def test_every_registered_strategy_is_covered() -> None:
    assert {name for name, _, _ in RUNS} == set(STRATEGIES)


@pytest.mark.parametrize(("name", "discrete", "options"), RUNS, ids=[r[0] for r in RUNS])
def test_recorded_keys_are_declared_with_their_types(name: str, discrete: bool, options: dict[str, Any]) -> None:
    space = synthetic_space().with_levels(LEVELS) if discrete else synthetic_space()
    strategy = make_strategy(name, space, 40, 0, **options)
    driver = Driver(strategy, make_objective(space, strategy.n_objectives), workers=3).run()
    seen: set[str] = set()
    for cand in driver.asked:
        for key, value in cand.meta.items():
            assert key in HINTS, f"{name} records meta key {key!r}, which CandidateMeta does not declare"
            assert _has_type(value, HINTS[key]), f"{name}: meta[{key!r}] = {value!r} is not {HINTS[key]}"
        seen |= cand.meta.keys()
    assert "origin" in seen and "expression" not in seen  # gp moves its expression out of the meta


def test_a_stored_meta_loads_as_written() -> None:
    """A checkpoint's meta is read back unchanged, a key no longer written included."""
    data = {"id": 3, "sparsity": [0.5], "expression": None, "meta": {"stage": 1, "origin": "random"}}
    cand = Candidate.from_dict(data)
    assert cand.to_dict() == data and list(cand.meta) == ["stage", "origin"]
