"""Fault tests: a failing evaluation, a killed actor, a killed and resumed driver.

Each must end with the full budget and every trial recorded exactly once, in the job store
and in MLflow, with nothing left RUNNING.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import ray
from killed_driver import run_then_kill
from mlflow.tracking import MlflowClient
from mlflow_seed import seed_mlflow

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore

pytestmark = pytest.mark.ray
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def kill_flag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("flags") / "killed"


@pytest.fixture(scope="module", autouse=True)
def local_ray(kill_flag: Path) -> Iterator[None]:
    # Workers inherit this environment: they import fault_tasks and see the kill flag.
    old = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    os.environ["PRUNEHIVE_TEST_KILL_FLAG"] = str(kill_flag)
    sys.path.insert(0, str(HERE))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    os.environ.clear()
    os.environ.update(old)


def spec(task: str, strategy: str = "random", budget: int = 16) -> dict[str, Any]:
    return {
        "kind": "search",
        "task": task,
        "pruning": {"sparsity": 0.8},
        "search": {"strategy": strategy, "budget": budget, "seed": 1},
        "resources": {"workers": 2, "batch": 1},
    }


def children(result_uri: str, parent: str) -> list[Any]:
    client = MlflowClient(result_uri)
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'", max_results=1000)


def test_failed_evaluations_are_recorded_and_the_search_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRUNEHIVE_HOME", str(tmp_path))
    seed_mlflow(tmp_path)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    s = spec("fault_tasks:failing", budget=20)
    s["search"]["baselines"] = ["uniform"]
    result = SearchRun(store, start_job(store, parse_spec(s)), show_progress=False).run()
    trials = store.trials(result["job_id"])
    states = [t.state for t in trials]
    assert len(trials) == 20 and "failed" in states and "complete" in states
    failed = next(t for t in trials if t.state == "failed")
    assert failed.error is not None and "fc5 too sparse" in failed.error
    runs = children(result["tracking_uri"], result["mlflow_run_id"])
    assert len([r for r in runs if r.data.tags.get("prunehive.state") == "failed"]) == states.count("failed")


def test_an_evaluation_past_the_timeout_fails_and_the_search_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRUNEHIVE_HOME", str(tmp_path))
    seed_mlflow(tmp_path)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    s = spec("fault_tasks:hanging", budget=8)
    s["search"].update(baselines=["uniform", "erk"], eval_timeout=1.5)
    result = SearchRun(store, start_job(store, parse_spec(s)), show_progress=False).run()
    trials = store.trials(result["job_id"])
    assert [t.candidate_id for t in trials] == list(range(8))
    timed_out = [t for t in trials if t.state == "failed"]
    assert timed_out and all("TimeoutError" in (t.error or "") for t in timed_out)
    assert any(t.state == "complete" for t in trials)
    assert "TimeoutError" in result["baselines"]["uniform"]["error"]  # fc5 at 80%: it hangs too


def test_a_killed_actor_is_replaced_and_its_candidate_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEHIVE_HOME", str(tmp_path))
    seed_mlflow(tmp_path)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    s = spec("fault_tasks:dying", budget=12)
    s["search"]["baselines"] = ["uniform"]
    run = SearchRun(store, start_job(store, parse_spec(s)), show_progress=False)
    result = run.run()
    assert Path(os.environ["PRUNEHIVE_TEST_KILL_FLAG"]).exists()  # an actor really died
    trials = store.trials(result["job_id"])
    assert [t.candidate_id for t in trials] == list(range(12))
    assert all(t.state == "complete" for t in trials)
    assert (
        len(
            [
                r
                for r in children(result["tracking_uri"], result["mlflow_run_id"])
                if r.data.tags.get("prunehive.kind") == "trial"
            ]
        )
        == 12
    )


# bayesian resumes the same way (its state round trip is in the strategy conformance suite): slow only
@pytest.mark.parametrize("strategy", ["evolution", pytest.param("bayesian", marks=pytest.mark.slow)])
def test_killed_driver_resumes_without_repeating_trials(tmp_path: Path, strategy: str) -> None:
    seed_mlflow(tmp_path)
    s = spec("fault_tasks:slow", strategy=strategy, budget=24)
    s["search"]["baselines"] = ["uniform"]
    if strategy == "evolution":
        s["search"]["options"] = {"population": 8}
    killed = run_then_kill(s, tmp_path, [HERE], lambda store, job_id: store.count_trials(job_id) >= 6, 240)
    store, job_id = killed.store, killed.job_id
    done_before = store.count_trials(job_id)
    assert done_before < 24
    checkpoint = store.get_job(job_id).strategy_state or {}
    assert checkpoint["told"] == done_before and "history" not in checkpoint  # the trial rows hold it
    assert store.get_job(job_id).status == "running"  # the driver died without a word

    killed.resume()
    trials = store.trials(job_id)
    assert [t.candidate_id for t in trials] == list(range(24))
    assert store.get_job(job_id).status == "succeeded"
    job = store.get_job(job_id)
    runs = children(f"sqlite:///{tmp_path / 'mlflow.db'}", job.mlflow_run_id or "")
    trial_runs = [r for r in runs if r.data.tags.get("prunehive.kind") == "trial"]
    assert sorted(int(r.data.tags["prunehive.candidate_id"]) for r in trial_runs) == list(range(24))
    assert all(r.info.status == "FINISHED" for r in runs)
    assert (
        MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(job.mlflow_run_id or "").info.status == "FINISHED"
    )
    if strategy == "bayesian":
        study = optuna.load_study(study_name=f"prunehive-{job_id}", storage=store.url)
        assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
