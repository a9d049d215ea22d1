"""Successive halving for bayesian search, end to end on a real local Ray, SQLite job store (which also
holds the Optuna study) and MLflow store: each trial is scored on its stage's samples, promoted trials
report on through Optuna, and the job reports the tokens it spent."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.search.registry import STRATEGIES, strategy_class
from prunehive.workers.tasks.digits import DigitsMLP

FIDELITY, SURVIVORS = [60, 150, 300], [4, 2, 1]  # rungs of 8 -> 4 -> 2 trials


def spec_for(strategy: str, budget: int = 28) -> dict[str, object]:
    return {
        "kind": "search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.8, "metric": "wanda"},
        "search": {
            "strategy": strategy,
            "budget": budget,
            "fidelity": FIDELITY,
            "survivors": SURVIVORS,
            "baselines": ["uniform", "owl"],
            "options": {"n_startup_trials": 4} if strategy == "bayesian" else {},
        },
        "resources": {"workers": 1},
    }


def test_fidelity_is_for_the_strategies_that_select_in_stages() -> None:
    for strategy in STRATEGIES.keys() - {"gp-metric"}:
        if strategy_class(strategy).multi_fidelity:
            assert parse_spec(spec_for(strategy)).search.fidelity == FIDELITY
        else:
            with pytest.raises(SpecError, match="no multi-fidelity selection; use one of evolution, bayesian"):
                parse_spec(spec_for(strategy))


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_bayesian_successive_halving_spends_each_stages_samples(home: Path) -> None:
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    job_id = start_job(store, parse_spec(spec_for("bayesian")))
    result = SearchRun(store, job_id, show_progress=False).run()
    assert result["status"] == "succeeded" and result["trials"] == 28
    trials = store.trials(job_id)
    counts: dict[int, list[int]] = {}
    for t in trials:
        assert t.result is not None, t.error
        meta = t.params["meta"]
        assert meta["tokens"] == FIDELITY[meta["fidelity"]] == t.result["tokens"]  # scored on its stage's samples
        counts.setdefault(meta["rung"], [0, 0, 0])[meta["fidelity"]] += 1
    assert counts == {0: [8, 4, 2], 1: [8, 4, 2]}
    validation = len(DigitsMLP().split("validation")[1])
    finals = 1 + len(result["baselines"])  # the best and each baseline, re-scored on all of validation
    assert result["evaluation_tokens"] == sum(t.result["tokens"] for t in trials) + finals * validation

    study = optuna.load_study(study_name=f"prunehive-{job_id}", storage=store.url)
    states = [t.state for t in study.get_trials()]
    assert len(states) == 16 and states.count(TrialState.COMPLETE) == 4 and states.count(TrialState.PRUNED) == 12
