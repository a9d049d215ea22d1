"""The dispatcher on a real local Ray, with the store (and MLflow, Optuna) on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow.tracking import MlflowClient

from prunehive.platform.service.backends import LocalBackend
from prunehive.platform.service.dispatcher import Dispatcher
from prunehive.platform.store.jobs import JobStore

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny(budget: int = 3, strategy: str = "random", **search: Any) -> dict[str, Any]:
    return {
        "kind": "search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.8},
        "search": {"strategy": strategy, "budget": budget, "seed": 0, "baselines": ["uniform"], **search},
        "resources": {"workers": 1, "cpus_per_worker": 0.5, "batch": 1},
    }


@pytest.fixture()
def store(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> JobStore:
    """The job store; on PostgreSQL, MLflow's backend is a PostgreSQL database too."""
    monkeypatch.setenv("PRUNEHIVE_HOME", str(tmp_path))
    if db_url.startswith("postgresql"):
        new_db: Callable[[], str] = request.getfixturevalue("new_pg_database")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", new_db())
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return JobStore(db_url)


def drive(dispatcher: Dispatcher, done: Callable[[], bool], timeout: float = 240.0) -> int:
    """Step the dispatcher until ``done``; returns the most jobs seen running at once."""
    most, deadline = 0, time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "jobs did not finish in time"
        dispatcher.step()
        most = max(most, len(dispatcher.active))
        time.sleep(0.2)
    return most


def test_dispatches_within_the_limit_cancels_and_reconciles(store: JobStore, tmp_path: Path) -> None:
    # Left behind by this server before a restart: one job to resume, one that used up its attempts.
    orphan = store.create_job("search", "orphan", tiny(budget=4, strategy="bayesian"), owner="alice")
    assert store.claim_next_job("thishost/old") is not None
    store.set_dispatch(orphan, "local-gone")
    exhausted = store.create_job("search", "exhausted", tiny(), owner="alice")
    for attempt in range(3):
        assert store.claim_next_job(f"thishost/old{attempt}") is not None
        if attempt < 2:
            assert store.requeue(exhausted, None)
    small = [store.create_job("search", f"small-{i}", tiny(), owner="alice") for i in range(2)]
    big = store.create_job("search", "big", tiny(budget=500), owner="bob")

    backend = LocalBackend(store, tmp_path / "logs")
    dispatcher = Dispatcher(store, backend, max_jobs=2, poll_seconds=0.2, server_name="thishost")
    dispatcher.reconcile()
    failed = store.get_job(exhausted)
    assert failed.status == "failed" and "gave up after 3 attempts" in (failed.error or "")
    assert store.get_job(orphan).status == "queued"
    cancelled = False

    def finished() -> bool:
        nonlocal cancelled
        if not cancelled and store.count_trials(big) > 0:
            cancelled = store.request_cancel(big) == "running"
        closed = all(store.get_job(j).status in ("succeeded", "failed", "cancelled") for j in [orphan, *small, big])
        return closed and not dispatcher.active

    assert drive(dispatcher, finished) == 2 and dispatcher.peak == 2
    resumed = store.get_job(orphan)
    assert resumed.status == "succeeded", resumed.error
    # Resumed from its checkpoint: no trial repeated. On a loaded machine a driver's own Ray start can time
    # out once; the dispatcher then starts it again (a third attempt), which is what it is for.
    assert resumed.attempts in (2, 3) and store.count_trials(orphan) == 4, backend.logs(resumed)
    for job_id in small:
        job = store.get_job(job_id)
        assert job.status == "succeeded", job.error
        assert store.count_trials(job_id) == 3
    job = store.get_job(big)
    assert job.status == "cancelled" and 0 < store.count_trials(big) < 500
    assert MlflowClient().get_run(job.mlflow_run_id or "").info.status == "KILLED"  # MLFLOW_TRACKING_URI
    assert "starts job" in backend.logs(job)
