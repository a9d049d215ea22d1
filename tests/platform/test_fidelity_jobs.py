"""Multi-fidelity EvoPress jobs with the KL fitness, end to end on a real local Ray, SQLite job store and
MLflow store: each trial is scored on its stage's samples, the job reports what it spent, and a killed
driver resumes without scoring any candidate twice at any stage."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from killed_driver import run_then_kill
from mlflow.tracking import MlflowClient
from torch import nn

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.workers.tasks.base import Evaluation, Observer, Split
from prunehive.workers.tasks.digits import DigitsMLP

pytestmark = [pytest.mark.ray]
HERE = Path(__file__).resolve().parent
FIDELITY, SURVIVORS = [60, 150, 300], [4, 2, 1]


class SlowDigits(DigitsMLP):
    """Slow enough evaluations that a test can kill the driver mid-search (imported by the workers)."""

    def evaluate(
        self, model: nn.Module, split: Split = "validation", limit: int | None = None, observe: Observer | None = None
    ) -> Evaluation:
        time.sleep(0.1)
        return super().evaluate(model, split, limit, observe)


def slow(seed: int = 0) -> SlowDigits:
    return SlowDigits(seed=seed)


def spec_for(task: str = "digits-mlp", budget: int = 30) -> dict[str, Any]:
    return {
        "kind": "search",
        "task": task,
        "pruning": {"sparsity": 0.8, "metric": "wanda", "solver": "sparsegpt"},
        "search": {
            "strategy": "evopress",
            "budget": budget,
            "seed": 0,
            "fitness": "kl",
            "fidelity": FIDELITY,
            "survivors": SURVIVORS,
            "baselines": ["uniform", "owl"],
            "options": {"offspring": 8},
        },
        "resources": {"workers": 1},
    }


def staged_trials(store: JobStore, job_id: str) -> list[Any]:
    trials = store.trials(job_id)
    for t in trials:
        assert t.result is not None, t.error
        meta = t.params["meta"]
        assert meta["tokens"] == FIDELITY[meta["fidelity"]]
        assert t.result["tokens"] == meta["tokens"]  # scored on exactly its stage's samples
    return trials


@pytest.mark.usefixtures("local_ray")
def test_evopress_with_kl_fitness_spends_each_stages_samples(home: Path) -> None:
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    job_id = start_job(store, parse_spec(spec_for()))
    result = SearchRun(store, job_id, show_progress=False).run()
    assert result["status"] == "succeeded" and result["trials"] == 30
    trials = staged_trials(store, job_id)
    assert {t.params["meta"]["fidelity"] for t in trials} == {0, 1, 2}  # every stage was reached
    for t in trials:
        kl = t.result["metrics"]["validation"]["kl"]
        assert kl >= 0 and t.outcome == [pytest.approx(-kl)]  # the strategy maximised minus the KL
    validation = len(DigitsMLP().split("validation")[1])
    finals = 1 + len(result["baselines"])  # the best and each baseline, re-scored on all of validation
    assert result["evaluation_tokens"] == sum(t.result["tokens"] for t in trials) + finals * validation
    assert result["best"]["metrics"]["validation"]["kl"] >= 0 and "accuracy" in result["best"]["metrics"]["test"]

    client = MlflowClient(result["tracking_uri"])
    runs = client.search_runs(
        [client.get_run(result["mlflow_run_id"]).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_run_id']}'",
        max_results=1000,
    )
    children = {r.data.tags["prunehive.candidate_id"]: r for r in runs if r.data.tags["prunehive.kind"] == "trial"}
    for t in trials:
        metrics = children[str(t.candidate_id)].data.metrics
        assert metrics["tokens"] == t.result["tokens"] and "validation.kl" in metrics
    artifacts = {a.path for a in client.list_artifacts(result["mlflow_run_id"], "plots")}
    assert "plots/best_so_far.png" in artifacts


def test_killed_evopress_driver_resumes_without_repeating_a_stage(tmp_path: Path) -> None:
    def promoted(store: JobStore, job_id: str) -> bool:  # past the first stage: a promoted candidate scored
        return any(t.params["meta"]["fidelity"] > 0 for t in store.trials(job_id))

    killed = run_then_kill(spec_for("test_fidelity_jobs:slow", budget=24), tmp_path, [HERE, HERE.parent], promoted)
    store, job_id = killed.store, killed.job_id
    assert store.count_trials(job_id) < 24

    killed.resume()
    trials = staged_trials(store, job_id)
    assert [t.candidate_id for t in trials] == list(range(24))
    metas = [t.params["meta"] for t in trials]
    promoted = [(m["generation"], m["fidelity"], m["promoted_from"]) for m in metas if m["fidelity"] > 0]
    assert len(set(promoted)) == len(promoted)  # no candidate promoted twice to one stage
    assert store.get_job(job_id).status == "succeeded"
