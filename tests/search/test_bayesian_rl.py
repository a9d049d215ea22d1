"""The Bayesian (Optuna) and RL (AMC/DDPG) strategies: the shared suite plus their own contracts.

SQLite commits fsync, which costs ~20 ms each on a busy CI disk, so the full suite on SQLite is
marked slow; the default run keeps SQLite to a compact round trip and the crash/resume story.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from prunehive.search.bayesian import BayesianStrategy
from prunehive.search.rl import RLStrategy, clamp_sparsity
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Strategy
from prunehive.search.testing import CHECKS, Driver, StrategyFactory, make_objective, stored_history, synthetic_space


def _bayes_memory(space: SearchSpace, budget: int, seed: int) -> Strategy:
    return BayesianStrategy(space, budget, seed)


def _rl(space: SearchSpace, budget: int, seed: int) -> Strategy:
    return RLStrategy(space, budget, seed, updates_per_tell=4)  # half the CPU; defaults are tested below


def _bayes_sqlite(tmp_path: Path, **options: Any) -> StrategyFactory:
    """A new database file per strategy: a restored strategy rebuilds its study from the state."""
    counter = itertools.count()

    def factory(space: SearchSpace, budget: int, seed: int) -> Strategy:
        url = f"sqlite:///{tmp_path}/study{next(counter)}.db"
        return BayesianStrategy(space, budget, seed, storage=url, **options)

    return factory


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("factory", [_bayes_memory, _rl], ids=["bayesian", "rl"])
def test_conformance(factory: StrategyFactory, check: str) -> None:
    CHECKS[check](factory, 1)


@pytest.mark.slow
@pytest.mark.parametrize("check", list(CHECKS))
def test_conformance_bayesian_sqlite(tmp_path: Path, check: str) -> None:
    CHECKS[check](_bayes_sqlite(tmp_path), 1)


def _dump(driver: Driver, start: int = 0) -> list[str]:
    return [json.dumps(c.to_dict(), sort_keys=True) for c in driver.asked[start:]]


def test_bayesian_sqlite_roundtrip_rebuilds_the_study(tmp_path: Path) -> None:
    space, factory = synthetic_space(), _bayes_sqlite(tmp_path, n_startup_trials=3)  # TPE models early
    objective = make_objective(space, 1)
    original = Driver(factory(space, 10, 5), objective, workers=3).run(max_steps=4)
    assert original.inflight
    restored_strategy = factory(space, 10, 5)
    restored_strategy.load_state_dict(
        json.loads(json.dumps(original.strategy.state_dict())), stored_history(original.results)
    )
    restored = Driver(restored_strategy, objective, workers=3)
    restored.inflight, restored.steps = list(original.inflight), original.steps
    n_before = len(original.asked)
    original.run()
    restored.run()
    assert _dump(original, n_before) == _dump(restored)
    assert original.strategy.state_dict() == restored.strategy.state_dict()


def test_bayesian_resumes_from_sqlite_after_a_crash(tmp_path: Path) -> None:
    url, name = f"sqlite:///{tmp_path}/jobs.db", "job-7"
    space = synthetic_space()
    objective = make_objective(space, 1)

    def running(study: optuna.Study) -> set[int]:
        return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}

    first = BayesianStrategy(space, 10, 0, storage=url, study_name=name, n_startup_trials=3)
    a, b, c = first.ask(3)
    first.tell(a.id, objective(a))
    checkpoint = json.loads(json.dumps(first.state_dict()))
    told = stored_history(first.history)
    first.tell(b.id, objective(b))  # told after the checkpoint: the study has it, the state does not
    lost = first.ask(2)  # asked after the checkpoint: the crash loses them
    lost_numbers = {first.trial_of[x.id] for x in lost}
    del first

    # Resumed under today's naming, the strategy keeps the study its state was written with, and names its metric.
    new_name, metric = "prunehive-0123abcd", ["val_neg_log_perplexity"]
    second = BayesianStrategy(space, 10, 0, storage=url, study_name=new_name, metric_names=metric, n_startup_trials=3)
    second.load_state_dict(checkpoint, told)
    assert second.study_name == name and optuna.get_all_study_names(url) == [name]
    study = optuna.load_study(study_name=name, storage=url)
    assert study.metric_names == metric
    assert running(study) == {second.trial_of[c.id]}, "only the pending, unfinished trial may stay RUNNING"
    assert {t.number for t in study.get_trials(states=(TrialState.FAIL,))} == lost_numbers
    assert set(second.pending) == {b.id, c.id}
    second.tell(b.id, objective(b))  # re-dispatched by the runner; the study already holds it
    second.tell(c.id, objective(c))
    Driver(second, objective, workers=2).run()
    assert second.done and second.told == 10
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials()
    assert not running(study)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 10  # 10 told, none twice
    assert len(trials) == 12  # plus the two lost ones, failed


def test_a_job_study_is_named_after_the_job_and_its_objective(tmp_path: Path) -> None:
    """What optuna-dashboard shows for a search job's study: ``prunehive-<job id>`` and the objective's name."""
    from prunehive.platform.jobs.search.setup import build_strategy, objective_name
    from prunehive.platform.spec.job import parse_spec
    from prunehive.workers.contracts import WorkerInfo

    url, space = f"sqlite:///{tmp_path}/jobs.db", synthetic_space()
    spec = parse_spec({"kind": "search", "search": {"strategy": "bayesian", "budget": 4}})
    names = {}
    for quality, higher in (("accuracy", True), ("perplexity", False)):
        info = WorkerInfo([], [], quality, higher, 1, 1, "w", 0.0, "cpu")
        strategy = build_strategy(spec, space, f"job{quality}", url, objective=objective_name(spec, info))
        strategy.ask(1)
        names[f"prunehive-job{quality}"] = optuna.load_study(study_name=f"prunehive-job{quality}", storage=url)
    assert [s.metric_names for s in names.values()] == [["val_accuracy"], ["val_neg_log_perplexity"]]


def test_bayesian_refuses_to_reuse_a_study_on_a_fresh_start(tmp_path: Path) -> None:
    url, space = f"sqlite:///{tmp_path}/s.db", synthetic_space()
    BayesianStrategy(space, 4, 0, storage=url).ask(1)
    with pytest.raises(optuna.exceptions.DuplicatedStudyError):
        BayesianStrategy(space, 4, 0, storage=url).ask(1)


def test_bayesian_gp_sampler_runs() -> None:
    space = synthetic_space()
    strategy = BayesianStrategy(space, 8, 0, sampler="gp", n_startup_trials=3)
    driver = Driver(strategy, make_objective(space, 1), workers=2).run()
    assert strategy.done and strategy.best()
    assert len({tuple(c.sparsity) for c in driver.asked}) == 8
    assert strategy.study.sampler.__class__.__name__ == "GPSampler"


def test_bayesian_rejects_unknown_sampler() -> None:
    with pytest.raises(ValueError):
        BayesianStrategy(synthetic_space(), 4, 0, sampler="cmaes")  # type: ignore[arg-type]


def test_rl_clamp_keeps_the_budget_reachable() -> None:
    space, rng = synthetic_space(), np.random.default_rng(0)
    w, (lo, hi), target = space.weights(), space.bounds(), space.target
    for _ in range(300):
        placed = 0.0
        x = np.zeros(space.dim)
        for t in range(space.dim):
            proposed = float(rng.choice([rng.uniform(-0.5, 1.5), 0.0, 1.0]))
            x[t] = clamp_sparsity(t, proposed, placed, w, lo, hi, target)
            placed += w[t] * x[t]
            rest_lo, rest_hi = float(w[t + 1 :] @ lo[t + 1 :]), float(w[t + 1 :] @ hi[t + 1 :])
            assert lo[t] - 1e-12 <= x[t] <= hi[t] + 1e-12
            assert rest_lo - 1e-9 <= target - placed <= rest_hi + 1e-9, f"layer {t} left the target unreachable"
        assert abs(space.achieved(x) - target) < 1e-9  # exact before repair


def test_rl_improves_over_its_warmup() -> None:
    space = synthetic_space()
    strategy = RLStrategy(space, 120, 0)  # default options
    Driver(strategy, make_objective(space, 1), workers=2).run()
    values = np.array([o.values[0] for _, o in sorted(strategy.history, key=lambda co: co[0].id)])
    warm, learned = values[: strategy.warmup], values[strategy.warmup :]
    assert learned.max() > warm.max(), f"best {learned.max():.3f} vs warm-up best {warm.max():.3f}"
    # the policy itself learned: its last episodes beat even the best random warm-up episode
    assert learned[-20:].mean() > warm.max(), f"last 20 {learned[-20:].mean():.3f} vs warm-up best {warm.max():.3f}"


def test_rl_state_is_plain_json() -> None:
    space = synthetic_space()
    strategy = RLStrategy(space, 30, 0, warmup=4, hidden=8, batch_size=8)
    Driver(strategy, make_objective(space, 1), workers=3).run(max_steps=12)
    state = strategy.state_dict()
    assert json.loads(json.dumps(state)) == state
