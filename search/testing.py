"""A reusable conformance suite every search strategy must pass (like optuna's pytest_samplers).

Strategies are resumed in other processes, driven by several workers at once and fed failures,
so these checks pin down what the runner relies on: determinism, exact budgets, a JSON state
that resumes mid-run from itself plus the told history, a hard evaluation budget, that the
search actually searches, and a checkpoint that stays the same size as the job grows.

    check_strategy(lambda space, budget, seed: MyStrategy(space, budget, seed))
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from prunehive.search.space import Layer, SearchSpace
from prunehive.search.strategy import Candidate, Outcome, Strategy

StrategyFactory = Callable[[SearchSpace, int, int], Strategy]
Objective = Callable[[Candidate], Outcome]

TOL = 1e-6


def synthetic_space(dim: int = 8) -> SearchSpace:
    """Layers of very different sizes; the last one (a classifier head) is kept dense."""
    if dim < 2:
        raise ValueError("the synthetic space needs at least two layers")
    layers = []
    for i in range(dim - 1):
        out_ch, in_ch = 16 * 2 ** (i % 4), 8 * (i + 1)
        params = out_ch * in_ch * 9
        layers.append(Layer(f"conv{i}", "conv2d", (out_ch, in_ch, 3, 3), params, params * (32 >> (i % 3)) ** 2))
    layers.append(Layer("head", "linear", (10, 64), 640, 640))
    return SearchSpace(layers, target=0.5, overrides={"head": (0.0, 0.0)})


def synthetic_optimum(space: SearchSpace) -> np.ndarray:
    """The known maximiser at ``space.target``: feasible, and far from the uniform allocation."""
    pattern = space.target + 0.35 * np.sin(np.linspace(0.5, 2.5 * np.pi, space.dim))
    return space.repair(pattern)


def _curvature(space: SearchSpace) -> np.ndarray:
    return 1.0 + 3.0 * np.arange(space.dim) / space.dim  # layers differ in sensitivity


def synthetic_objective(space: SearchSpace, vector: Any, n_objectives: int = 1) -> tuple[float, ...]:
    """Quality = -sum a_i (x_i - x*_i)^2 - beta (achieved - target); plus achieved sparsity.

    At the space's target the linear term vanishes, so the maximum (0) is at ``synthetic_optimum``.
    ``beta`` makes the best quality fall steadily as sparsity rises through target - 0.2 .. target,
    so a second objective (the achieved sparsity) has a real trade-off front to find.
    """
    x = np.asarray(vector, dtype=np.float64)
    a, w = _curvature(space), space.weights()
    s = float(np.sum(w**2 / a))
    beta = 0.6 / s
    achieved = space.achieved(x)
    quality = -float(np.sum(a * (x - synthetic_optimum(space)) ** 2)) - beta * (achieved - space.target)
    return (quality,) if n_objectives == 1 else (quality, achieved)


class Driver:
    """Simulates ``workers`` parallel evaluators that finish out of order, deterministically."""

    def __init__(self, strategy: Strategy, objective: Objective, workers: int = 1) -> None:
        self.strategy, self.objective, self.workers = strategy, objective, workers
        self.inflight: list[Candidate] = []
        self.asked: list[Candidate] = []
        self.results: list[tuple[Candidate, Outcome]] = []
        self.steps = 0

    def step(self) -> bool:
        """Top the workers up, then tell one result; False once there is nothing left to tell."""
        while len(self.inflight) < self.workers:
            want = self.workers - len(self.inflight)
            new = self.strategy.ask(want)
            assert len(new) <= want, f"ask({want}) returned {len(new)} candidates"
            if not new:
                break
            self.inflight += new
            self.asked += new
        if not self.inflight:
            assert self.strategy.done, f"stalled: nothing pending and ask() is empty after {self.strategy.told} tells"
            return False
        cand = self.inflight.pop(self.steps % len(self.inflight))  # out-of-order completion
        outcome = self.objective(cand)
        self.strategy.tell(cand.id, outcome)
        self.results.append((cand, outcome))
        self.steps += 1
        return True

    def run(self, max_steps: int | None = None) -> Driver:
        while (max_steps is None or self.steps < max_steps) and self.step():
            pass
        return self


def make_objective(space: SearchSpace, n_objectives: int, fail: Callable[[int], bool] | None = None) -> Objective:
    def objective(cand: Candidate) -> Outcome:
        if fail is not None and fail(cand.id):
            return Outcome.failed()
        return Outcome(synthetic_objective(space, cand.sparsity, n_objectives))

    return objective


def stored_history(told: list[tuple[Candidate, Outcome]]) -> list[tuple[Candidate, Outcome]]:
    """The told history after a trip through JSON, as a runner reads it back from its trial rows."""
    rows = json.loads(json.dumps([[c.to_dict(), list(o.values), o.state] for c, o in told]))
    return [(Candidate.from_dict(c), Outcome(tuple(float(v) for v in values), state)) for c, values, state in rows]


def _dump(cands: list[Candidate]) -> list[str]:
    return [json.dumps(c.to_dict(), sort_keys=True) for c in cands]


def _drive(factory: StrategyFactory, n_objectives: int, budget: int, seed: int, workers: int, **kw: Any) -> Driver:
    space = synthetic_space()
    strategy = factory(space, budget, seed)
    assert strategy.n_objectives == n_objectives, f"{strategy.name} has {strategy.n_objectives} objectives"
    return Driver(strategy, make_objective(space, n_objectives, **kw), workers).run()


# ---- the checks -------------------------------------------------------------------------------
def check_determinism(factory: StrategyFactory, n_objectives: int) -> None:
    """(a) Same seed and same tells give the same candidates; another seed gives others."""
    for workers in (1, 4):
        first = _dump(_drive(factory, n_objectives, 40, 0, workers).asked)
        assert first == _dump(_drive(factory, n_objectives, 40, 0, workers).asked), f"not deterministic ({workers=})"
        assert first != _dump(_drive(factory, n_objectives, 40, 1, workers).asked), f"seed ignored ({workers=})"


def check_feasibility(factory: StrategyFactory, n_objectives: int) -> None:
    """(b) Every candidate is within the per-layer bounds and meets its budget to 1e-6 (or, where the
    strategy made the space discrete, as closely as its level grid allows: ``space.tolerance``)."""
    for workers in (1, 4):
        driver = _drive(factory, n_objectives, 60, 3, workers)
        space = driver.strategy.space  # the factory may have put the synthetic space on a level grid
        lo, hi = space.bounds()
        reach_lo, reach_hi = space.reachable()
        for cand in driver.asked:
            x = np.asarray(cand.sparsity, dtype=np.float64)
            assert x.shape == (space.dim,) and np.all(np.isfinite(x)), f"bad vector {cand.sparsity}"
            assert np.all(x >= lo - 1e-9) and np.all(x <= hi + 1e-9), f"out of bounds: {cand.sparsity}"
            target = float(cand.meta.get("target", space.target)) if n_objectives > 1 else space.target
            assert reach_lo - 1e-9 <= target <= reach_hi + 1e-9, f"unreachable target {target}"
            tol = TOL if n_objectives > 1 else max(TOL, space.tolerance(x))
            assert abs(space.achieved(x) - target) <= tol, f"misses its budget {target}: {space.achieved(x)}"
            if space.discrete:
                assert all(np.any(np.isclose(v, a)) for v, a in zip(x, space.allowed(), strict=True)), "off the grid"
            json.dumps(cand.to_dict())


def check_state_roundtrip(factory: StrategyFactory, n_objectives: int) -> None:
    """(c) A JSON copy of the state, taken with candidates still out, resumes identically."""
    space = synthetic_space()
    objective = make_objective(space, n_objectives)
    for workers, cut in ((1, 0), (1, 9), (4, 7), (4, 23)):
        original = Driver(factory(space, 50, 5), objective, workers).run(max_steps=cut)
        if workers > 1 and cut > 0:
            assert original.inflight, "the cut should leave candidates asked but not told"
        state = json.loads(json.dumps(original.strategy.state_dict()))
        restored_strategy = factory(space, 50, 5)
        restored_strategy.load_state_dict(state, stored_history(original.results))
        restored = Driver(restored_strategy, objective, workers)
        restored.inflight = list(original.inflight)
        restored.steps = original.steps
        n_before = len(original.asked)
        original.run()
        restored.run()
        assert _dump(original.asked[n_before:]) == _dump(restored.asked), f"resume diverged ({workers=}, {cut=})"
        assert json.dumps(original.strategy.state_dict(), sort_keys=True) == json.dumps(
            restored.strategy.state_dict(), sort_keys=True
        ), f"final states differ ({workers=}, {cut=})"
        assert stored_history(original.strategy.history) == restored.strategy.history, f"histories differ ({cut=})"


def check_budget(factory: StrategyFactory, n_objectives: int) -> None:
    """(d) Tells reach the budget exactly; afterwards ask() is empty and done is True."""
    for workers in (1, 4):
        driver = _drive(factory, n_objectives, 30, 2, workers)
        s = driver.strategy
        assert s.told == 30 and len(s.history) == 30 and not s.pending and s.done
        assert s.ask(1) == [] and s.ask(8) == []
        ids = [c.id for c in driver.asked]
        assert len(set(ids)) == len(ids) == 30, "candidate ids must be unique"


def check_improvement(factory: StrategyFactory, n_objectives: int) -> None:
    """(e) With ~120 evaluations the best value clearly beats the first ten candidates' mean.

    A strategy that proposes the same point every time has best == mean and fails.
    """
    for seed, workers in ((0, 1), (1, 4)):
        driver = _drive(factory, n_objectives, 120, seed, workers)
        by_id = sorted(driver.results, key=lambda co: co[0].id)
        first = np.array([o.values[0] for _, o in by_id[:10]])
        best = max(o.values[0] for _, o in by_id)
        margin = 0.5 * float(first.std())
        assert margin > 0 and best > first.mean() + margin, (
            f"no improvement ({seed=}, {workers=}): best {best:.4f}, first ten {first.mean():.4f} ± {first.std():.4f}"
        )
        front = driver.strategy.best()
        assert front, "best() is empty after a complete run"
        if n_objectives > 1:
            vals = {c.id: o.values for c, o in driver.results}
            for c in front:
                assert not any(
                    all(p >= q for p, q in zip(v, vals[c.id], strict=True)) and v != vals[c.id] for v in vals.values()
                ), "best() returned a dominated candidate"


def check_failures(factory: StrategyFactory, n_objectives: int) -> None:
    """(f) Failed evaluations (every third, and a run that starts with ten) are survived."""
    for workers in (1, 4):
        _drive(factory, n_objectives, 40, 4, workers, fail=lambda i: i % 3 == 1)
        _drive(factory, n_objectives, 30, 4, workers, fail=lambda i: i < 10)
        everything = _drive(factory, n_objectives, 12, 4, workers, fail=lambda i: True)
        assert everything.strategy.done and everything.strategy.best() == []


def check_oversized_ask(factory: StrategyFactory, n_objectives: int) -> None:
    """(g) ask(n) beyond the remaining budget never hands out more than the budget."""
    space = synthetic_space()
    objective = make_objective(space, n_objectives)
    for budget in (1, 5, 7):
        s = factory(space, budget, 0)
        asked = 0
        while not s.done:
            batch = s.ask(100)
            asked += len(batch)
            assert asked <= budget, f"{asked} candidates asked with a budget of {budget}"
            pending = list(s.pending.values())
            assert pending, "stalled: ask() is empty with nothing pending"
            for cand in pending[: max(1, len(pending) // 2)]:  # tell about half, then ask again
                s.tell(cand.id, objective(cand))
        assert s.ask(100) == [] and s.told == budget


def state_bytes(strategy: Strategy, objective: Objective, tells: tuple[int, ...], workers: int = 2) -> list[int]:
    """The size of the JSON checkpoint after each number of ``tells`` (ascending) in one run."""
    driver, sizes = Driver(strategy, objective, workers), []
    for n in tells:
        driver.run(max_steps=n)
        assert driver.steps == n, f"{strategy.name} stopped after {driver.steps} of {n} tells"
        sizes.append(len(json.dumps(strategy.state_dict())))
    return sizes


def check_state_size(factory: StrategyFactory, n_objectives: int, objective: Objective | None = None) -> None:
    """(h) The checkpoint does not grow with the job: 500 tells cost about as many bytes as 50.

    The history is the runner's to keep; a state that copies it (or anything per trial) grows
    tenfold here. The slack allows for a population filling up and numbers printing longer.
    """
    space = synthetic_space()
    strategy = factory(space, 500, 0)
    small, large = state_bytes(strategy, objective or make_objective(space, n_objectives), (50, 500))
    assert large <= 1.1 * small + 4096, f"{strategy.name}'s checkpoint grew from {small} B at 50 tells to {large} B"


CHECKS: dict[str, Callable[[StrategyFactory, int], None]] = {
    "determinism": check_determinism,
    "feasibility": check_feasibility,
    "state_roundtrip": check_state_roundtrip,
    "budget": check_budget,
    "improvement": check_improvement,
    "failures": check_failures,
    "oversized_ask": check_oversized_ask,
}


def check_strategy(factory: StrategyFactory, *, n_objectives: int = 1) -> None:
    """Run every check; raises AssertionError naming the first one that fails."""
    for check in CHECKS.values():
        check(factory, n_objectives)
    check_state_size(factory, n_objectives)
