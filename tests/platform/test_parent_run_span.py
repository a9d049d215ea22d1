"""A search job's MLflow parent run spans the whole job (Ray, the workers, the warm start included), carries
its start-up, search and finish times, and is reused when the job resumes."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.platform.tracking.tracker import TAG_JOB_ID

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]
PHASES = ("startup_seconds", "search_seconds", "finish_seconds")

SPEC: dict[str, Any] = {
    "kind": "search",
    "task": "digits-mlp",
    "pruning": {"sparsity": 0.8, "metric": "magnitude", "granularity": "unstructured"},
    "search": {"strategy": "evolution", "budget": 6, "seed": 0, "options": {"population": 4}, "warm_start": True},
    "resources": {"workers": 1},
}


def new_job(home: Path) -> tuple[JobStore, str]:
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    return store, start_job(store, parse_spec(SPEC))


def test_parent_run_spans_the_job_and_logs_its_phases(home: Path) -> None:
    store, job_id = new_job(home)
    result = SearchRun(store, job_id, show_progress=False).run()
    run = MlflowClient(result["tracking_uri"]).get_run(result["mlflow_run_id"])
    job = store.get_job(job_id)
    assert job.started_at is not None
    started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)  # SQLite drops it
    assert run.info.start_time <= started.timestamp() * 1000  # opened before the job counted as running
    metrics = {k: run.data.metrics[f"timing.{k}"] for k in PHASES}
    assert metrics == pytest.approx(result["timing"])
    duration = (run.info.end_time - run.info.start_time) / 1000
    assert duration >= sum(metrics.values()) - 0.25  # only creating the run itself lies outside it


def test_a_resumed_job_keeps_its_parent_run(home: Path) -> None:
    """A job whose first attempt died after opening its parent run resumes into that same run."""
    store, job_id = new_job(home)
    first = SearchRun(store, job_id, show_progress=False)
    parent = first._open_parent()
    first.tracker.finish_parent(parent, "KILLED")  # as a crash leaves it, once the process is gone
    result = SearchRun(store, job_id, show_progress=False).run()
    assert result["mlflow_run_id"] == parent
    client = MlflowClient(result["tracking_uri"])
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and "timing.search_seconds" in run.data.metrics
    parents = client.search_runs([run.info.experiment_id], filter_string=f"tags.`{TAG_JOB_ID}` = '{job_id}'")
    assert [r.info.run_id for r in parents] == [parent]
