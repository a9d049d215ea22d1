"""Multi-fidelity selection for random and bayesian (successive halving) and evolution (multi-step
selection): stage counts, promoted vectors, Optuna's pruned/complete trials, best at the top stage and
resume at any point of a stage without asking any (candidate, stage) twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from prunehive.search.bayesian import BayesianStrategy
from prunehive.search.evolution import EvolutionStrategy
from prunehive.search.halving import Halving
from prunehive.search.registry import make_strategy
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, Outcome, Strategy
from prunehive.search.testing import CHECKS, Driver, check_state_size, make_objective, stored_history, synthetic_space

LEVELS = [round(0.05 * i, 2) for i in range(20)]
STAGES: dict[str, Any] = {"fidelity": [1, 2, 4], "survivors": [5, 2, 1]}  # rungs of 10 -> 5 -> 2
RUNG = 10 + 5 + 2
VARIANTS: dict[str, tuple[str, bool, dict[str, Any]]] = {
    "random": ("random", False, STAGES),
    "random-levels": ("random", True, STAGES),
    "bayesian": ("bayesian", False, {**STAGES, "n_startup_trials": 4}),
    "evolution": ("evolution", False, {**STAGES, "population": 6}),  # a cut at 23 falls in a stage
    "evolution-levels": ("evolution", True, {**STAGES, "population": 6}),
}


def factory(name: str, discrete: bool, options: dict[str, Any]) -> Any:
    def build(space: SearchSpace, budget: int, seed: int) -> Strategy:
        return make_strategy(name, space.with_levels(LEVELS) if discrete else space, budget, seed, **options)

    return build


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conformance(variant: str, check: str) -> None:
    CHECKS[check](factory(*VARIANTS[variant]), 1)


@pytest.mark.parametrize("variant", ["random", "evolution"])
def test_checkpoint_stays_flat(variant: str) -> None:
    check_state_size(factory(*VARIANTS[variant]), 1)


def rungs(history: list[tuple[Candidate, Outcome]]) -> dict[int, list[int]]:
    """Candidates asked per stage, by rung."""
    out: dict[int, list[int]] = {}
    for c, _ in history:
        out.setdefault(c.meta["rung"], [0, 0, 0])[c.meta["fidelity"]] += 1
    return out


@pytest.mark.parametrize("name", ["random", "bayesian"])
def test_stages_promote_the_best_with_their_vectors_and_spend_the_budget_exactly(name: str) -> None:
    space = synthetic_space().with_levels(LEVELS)
    strategy = make_strategy(name, space, 3 * RUNG + 8, 0, **STAGES)
    Driver(strategy, make_objective(space, 1), workers=4).run()
    assert strategy.told == 3 * RUNG + 8 and not strategy.pending
    # the last rung is shrunk so its promotions still fit: 3 + 3 + 2 = 8
    assert rungs(strategy.history) == {0: [10, 5, 2], 1: [10, 5, 2], 2: [10, 5, 2], 3: [3, 3, 2]}
    by_id = {c.id: (c, o) for c, o in strategy.history}
    for c, _ in strategy.history:
        assert c.meta["tokens"] == STAGES["fidelity"][c.meta["fidelity"]]
        assert c.meta["levels"] == space.level_indices(c.sparsity)
        if c.meta["fidelity"] > 0:
            source = by_id[c.meta["promoted_from"]][0]
            assert source.sparsity == c.sparsity and source.meta["fidelity"] == c.meta["fidelity"] - 1
            assert source.meta.get("trial") == c.meta.get("trial")  # bayesian: the same Optuna trial
    for rung in range(4):
        for stage, keep in ((1, 5), (2, 2)):
            lower = [
                (o.values[0], c.id)
                for c, o in strategy.history
                if (c.meta["rung"], c.meta["fidelity"]) == (rung, stage - 1)
            ]
            promoted = {
                c.meta["promoted_from"]
                for c, _ in strategy.history
                if (c.meta["rung"], c.meta["fidelity"]) == (rung, stage)
            }
            assert promoted == {i for _, i in sorted(lower, key=lambda v: (-v[0], v[1]))[:keep]}


def test_best_only_compares_the_highest_stage() -> None:
    space = synthetic_space()
    plain = make_objective(space, 1)

    def cheap_stages_look_better(cand: Candidate) -> Outcome:
        return Outcome((plain(cand).values[0] + 10.0 * (2 - cand.meta["fidelity"]),))

    for name in ("random", "bayesian", "evolution"):
        strategy = make_strategy(name, space, 2 * RUNG, 1, **STAGES)
        Driver(strategy, cheap_stages_look_better, workers=3).run()
        top = [(o.values[0], c.id) for c, o in strategy.history if c.meta["fidelity"] == 2]
        assert [c.id for c in strategy.best()] == [max(top)[1]], name


def test_bayesian_reports_stages_and_prunes_what_it_does_not_promote() -> None:
    space = synthetic_space()
    strategy = BayesianStrategy(space, 2 * RUNG, 0, n_startup_trials=4, **STAGES)
    Driver(strategy, make_objective(space, 1), workers=4).run()
    trials = strategy.study.get_trials()
    assert len(trials) == 20  # one Optuna trial per fresh candidate; promotions carry it on
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.PRUNED) == 16
    values = {(c.meta["trial"], c.meta["fidelity"]): o.values[0] for c, o in strategy.history}
    for t in trials:
        assert t.intermediate_values == {s: values[(t.number, s)] for s in range(3) if (t.number, s) in values}
        assert t.value == t.intermediate_values[max(t.intermediate_values)]  # pruned: its last stage's value
        assert (t.state == TrialState.COMPLETE) == (2 in t.intermediate_values)


def _resume(strategy: Strategy, make: Any, objective: Any, cut: int, workers: int = 3) -> tuple[Driver, Driver]:
    first = Driver(strategy, objective, workers).run(max_steps=cut)
    restored = make()
    restored.load_state_dict(json.loads(json.dumps(strategy.state_dict())), stored_history(first.results))
    again = Driver(restored, objective, workers)
    again.inflight, again.steps = list(first.inflight), first.steps
    return first, again.run()


@pytest.mark.parametrize("name", ["random", "bayesian", "evolution"])
@pytest.mark.parametrize("cut", [10, 13, 16, 17, 25])  # inside stage 0, inside stage 1, at barriers, rung 2
def test_resume_at_any_point_of_a_stage_repeats_nothing_and_continues_identically(name: str, cut: int) -> None:
    space = synthetic_space()
    objective = make_objective(space, 1)

    def make() -> Strategy:
        return make_strategy(name, space, 2 * RUNG + 5, 7, **STAGES)

    whole = Driver(make(), objective, 3).run()
    first, again = _resume(make(), make, objective, cut)
    told = [c for c, _ in first.results] + [c for c, _ in again.results]
    assert len({c.id for c in told}) == len(told) == 2 * RUNG + 5
    staged = [(c.meta["promoted_from"], c.meta["fidelity"]) for c in told if c.meta["fidelity"] > 0]
    assert len(set(staged)) == len(staged), "a candidate was promoted twice to one stage"
    dump = [json.dumps(c.to_dict(), sort_keys=True) for c, _ in whole.results]
    assert dump == [json.dumps(c.to_dict(), sort_keys=True) for c in told]


def test_bayesian_resumes_on_its_stored_study_after_reports_and_prunes_landed(tmp_path: Path) -> None:
    """Crash after a stage's report and a ranking's prunes reached the study but not the checkpoint."""
    url, name = f"sqlite:///{tmp_path}/jobs.db", "job-9"
    space = synthetic_space()
    objective = make_objective(space, 1)

    def make() -> BayesianStrategy:
        return BayesianStrategy(space, RUNG, 0, storage=url, study_name=name, n_startup_trials=4, **STAGES)

    first = make()
    driver = Driver(first, objective, workers=10).run(max_steps=10)  # all of stage 0 told, not yet ranked
    checkpoint, told = json.loads(json.dumps(first.state_dict())), stored_history(driver.results)
    promoted = first.ask(5)  # the ranking prunes five trials in the study, then the crash
    first.tell(promoted[0].id, objective(promoted[0]))  # a stage-1 report lands too
    del first
    second = make()
    second.load_state_dict(checkpoint, told)
    again = second.ask(5)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in promoted]
    rest = Driver(second, objective, workers=5)
    rest.inflight = list(again)
    rest.run()
    assert second.told == RUNG and isinstance(second.halving, Halving)
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 2
    assert [t.state for t in trials].count(TrialState.PRUNED) == 8
    assert sum(len(t.intermediate_values) for t in trials) == RUNG  # every stage reported once


def test_evolution_stages_fill_the_pool_with_full_stage_results_only() -> None:
    space = synthetic_space()
    strategy = EvolutionStrategy(space, 8 + 5 + 2 + 3 * RUNG, 0, population=8, rung=10, **STAGES)
    Driver(strategy, make_objective(space, 1), workers=4).run()
    assert strategy.told == strategy.budget and not strategy.pending
    assert rungs(strategy.history) == {0: [8, 5, 2], 1: [10, 5, 2], 2: [10, 5, 2], 3: [10, 5, 2]}
    last = {c.id for c, _ in strategy.history if c.meta["fidelity"] == 2}
    assert strategy.pool and {m["id"] for m in strategy.pool} <= last
    for c, _ in strategy.history:
        assert abs(space.achieved(c.sparsity) - space.target) <= 1e-6  # every candidate on its budget
    offspring = [c for c, _ in strategy.history if c.meta["rung"] > 0 and c.meta["fidelity"] == 0]
    assert all(set(c.meta["parents"]) <= last for c in offspring)  # parents were full-stage results


def test_without_stages_nothing_changes() -> None:
    space = synthetic_space().with_levels(LEVELS)
    for name in ("random", "bayesian", "evolution"):
        strategy = make_strategy(name, space, 12, 0)
        Driver(strategy, make_objective(space, 1), workers=2).run()
        for c, _ in strategy.history:
            assert "fidelity" not in c.meta and "tokens" not in c.meta
            assert c.meta["levels"] == space.level_indices(c.sparsity)  # discrete mode records its levels
        assert "halving" not in strategy.state_dict()["extra"]
    with pytest.raises(ValueError, match="rung"):
        make_strategy("random", space, 12, 0, rung=4)
    assert np.isfinite(make_strategy("random", space, 12, 0, **STAGES).ask(1)[0].sparsity).all()
