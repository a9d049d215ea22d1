"""Every registered strategy runs the shared conformance suite; plus strategy-specific checks."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import prunehive.search
from prunehive.search.registry import make_strategy, strategy_class
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Strategy
from prunehive.search.testing import CHECKS, Driver, make_objective, synthetic_space

# Extension point: a new strategy joins the shared suite by adding its registry name here, and
# options that keep it fast under test (small models, few startup trials) to STRATEGY_OPTIONS.
STRATEGIES: list[str] = ["random", "evolution", "nsga2"]
STRATEGY_OPTIONS: dict[str, dict[str, Any]] = {}


def factory_for(name: str) -> Any:
    def factory(space: SearchSpace, budget: int, seed: int) -> Strategy:
        return make_strategy(name, space, budget, seed, **STRATEGY_OPTIONS.get(name, {}))

    return factory


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", STRATEGIES)
def test_conformance(name: str, check: str) -> None:
    CHECKS[check](factory_for(name), strategy_class(name).n_objectives)


def _best_value(name: str, seed: int, budget: int = 120, workers: int = 4) -> float:
    space = synthetic_space()
    driver = Driver(make_strategy(name, space, budget, seed), make_objective(space, 1), workers).run()
    return max(o.values[0] for _, o in driver.results if o.state == "complete")


def test_evolution_beats_random() -> None:
    evo = np.mean([_best_value("evolution", seed) for seed in range(3)])
    rnd = np.mean([_best_value("random", seed) for seed in range(3)])
    assert evo > rnd, f"evolution {evo:.4f} vs random {rnd:.4f} (maximised; optimum 0)"


def test_evolution_starts_from_uniform() -> None:
    space = synthetic_space()
    first = make_strategy("evolution", space, 20, 0).ask(1)[0]
    assert first.meta["origin"] == "uniform"
    assert np.allclose(first.sparsity, space.uniform())


def test_nsga2_front_is_nondominated_and_spans_targets() -> None:
    space = synthetic_space()
    strategy = make_strategy("nsga2", space, 160, 0)
    Driver(strategy, make_objective(space, 2), workers=4).run()
    values = {c.id: o.values for c, o in strategy.history if o.state == "complete"}
    front = strategy.best()
    assert len(front) >= 3
    for cand in front:
        mine = values[cand.id]
        assert not any(all(a >= b for a, b in zip(v, mine, strict=True)) and v != mine for v in values.values())
    targets = sorted(float(c.meta["target"]) for c in front)
    lo_t, hi_t = strategy.min_target, strategy.max_target  # type: ignore[attr-defined]
    assert len({round(t, 2) for t in targets}) >= 3, f"front sits on too few targets: {targets}"
    assert targets[-1] - targets[0] >= 0.5 * (hi_t - lo_t), f"front spans only {targets[0]:.3f}..{targets[-1]:.3f}"


def test_nsga2_is_generation_synchronous() -> None:
    space = synthetic_space()
    strategy = make_strategy("nsga2", space, 64, 0, population=8)
    first = strategy.ask(100)
    assert len(first) == 8 and strategy.ask(1) == []
    objective = make_objective(space, 2)
    for cand in first[:-1]:
        strategy.tell(cand.id, objective(cand))
    assert strategy.ask(1) == []
    strategy.tell(first[-1].id, objective(first[-1]))
    assert [c.meta["generation"] for c in strategy.ask(3)] == [1, 1, 1]


def test_nsga2_target_range_is_clipped_and_validated() -> None:
    space = synthetic_space()
    strategy = make_strategy("nsga2", space, 10, 0, min_target=0.0, max_target=2.0)
    lo, hi = space.reachable()
    assert strategy.min_target == pytest.approx(lo) and strategy.max_target == pytest.approx(hi)  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        make_strategy("nsga2", space, 10, 0, min_target=0.6, max_target=0.4)


def test_search_never_imports_the_platform_stack() -> None:
    forbidden = {"ray", "mlflow", "sqlalchemy", "fastapi"}
    root = Path(prunehive.search.__file__).parent
    offenders = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in forbidden]
    assert not offenders, f"search/ must stay free of the platform stack: {offenders}"


def test_deap_operators_leave_the_global_random_stream_alone() -> None:
    import random

    random.seed(123)
    expected = [random.random() for _ in range(3)]
    random.seed(123)
    space = synthetic_space()
    for name in ("evolution", "nsga2"):
        Driver(make_strategy(name, space, 40, 0), make_objective(space, strategy_class(name).n_objectives), 4).run()
    assert [random.random() for _ in range(3)] == expected


@pytest.mark.parametrize("name", ["evolution", "bayesian"])
def test_warm_start_vectors_are_asked_first(name: str) -> None:
    space = synthetic_space()
    lo, hi = space.bounds()
    warm = [list(space.repair(np.random.default_rng(i).uniform(lo, hi))) for i in range(3)]
    strategy = make_strategy(name, space, 30, 0, initial=warm)
    asked = [c.sparsity for c in strategy.ask(5)]
    for vector in warm:
        assert any(np.allclose(vector, a, atol=1e-9) for a in asked)
