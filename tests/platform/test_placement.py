"""Placement on a real 2-CPU local Ray, which cannot grow: a worker no node can hold fails at once
(one line, exit 2, no job row); more workers than fit run as fewer, said so; workers that wait for
resources other work holds say what is missing within seconds and fail after ``placement_timeout``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from mlflow_seed import seed_mlflow

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.cluster import Cluster, Demand, PlacementError, require
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore

pytestmark = pytest.mark.ray


def spec(**resources: Any) -> dict[str, Any]:
    return {
        "kind": "search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.8},
        "search": {"strategy": "random", "budget": 4, "seed": 0, "baselines": ["uniform"]},
        "resources": {"batch": 1, **resources},
    }


def test_fits_counts_per_node() -> None:
    nodes = ({"CPU": 2.0}, {"CPU": 3.0, "GPU": 1.0})
    view = Cluster(nodes, can_grow=False)
    assert view.fits(Demand(1.0)) == 5 and view.fits(Demand(2.0)) == 2 and view.fits(Demand(0.5, 1.0)) == 1
    assert view.fits(Demand(4.0)) == 0  # 5 CPUs in all, but no node has 4
    assert view.text() == "cluster: 5 CPUs, 1 GPUs; it cannot grow"


def test_a_worker_no_node_can_hold_fails_at_once_with_exit_2(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("kind: search\ntask: digits-mlp\nresources: {workers: 1, gpus_per_worker: 1}\n")
    env = dict(os.environ, PRUNEHIVE_HOME=str(tmp_path))
    env.pop("RAY_ADDRESS", None)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "prunehive.platform.cli", "run", str(spec_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "a worker needs 1 CPU, 1 GPU, which no node has" in errors[0], done.stderr
    assert "it cannot grow" in errors[0] and "Traceback" not in done.stderr
    assert time.monotonic() - started < 120
    assert JobStore(f"sqlite:///{tmp_path / 'prunehive.db'}").list_jobs() == []


@pytest.fixture(scope="module")
def two_cpus() -> Any:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_more_workers_than_fit_run_as_fewer_and_say_so(
    two_cpus: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PRUNEHIVE_HOME", str(tmp_path))
    seed_mlflow(tmp_path)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    result = SearchRun(store, start_job(store, parse_spec(spec(workers=64))), show_progress=False).run()
    assert "resources.workers: 64 asked, 2 fit (cluster: 2 CPUs, 0 GPUs; it cannot grow): running on 2" in (
        capsys.readouterr().err
    )
    trials = store.trials(result["job_id"])
    assert len(trials) == 4 and len({t.worker for t in trials}) <= 2
    all_free()  # the workers' slots (placement groups) are given back with the pool


def all_free(timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU") != 2.0:
        assert time.monotonic() < deadline, f"resources still held: {ray.available_resources()}"
        time.sleep(0.2)


def test_workers_waiting_for_held_resources_say_so_then_fail(
    two_cpus: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PRUNEHIVE_HOME", str(tmp_path))
    seed_mlflow(tmp_path)
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")

    @ray.remote(num_cpus=2)
    class Holder:
        def ping(self) -> int:
            return 1

    holder = Holder.remote()  # type: ignore[attr-defined]
    ray.get(holder.ping.remote())  # every CPU is taken by other work
    try:
        job_id = start_job(store, parse_spec(spec(workers=1, placement_timeout=6)))
        started = time.monotonic()
        with pytest.raises(PlacementError) as caught:
            SearchRun(store, job_id, show_progress=False).run()
        waited = time.monotonic() - started
    finally:
        ray.kill(holder)
    all_free()  # the slot still waiting when the job failed was withdrawn: it takes nothing now
    line = "waiting for resources: 0 of 1 workers placed (cluster: 2 CPUs, 0 GPUs; it cannot grow; "
    line += "each worker needs 1 CPU)"
    assert line in capsys.readouterr().err  # said within seconds, before the timeout
    assert str(caught.value) == f"{line}; gave up after resources.placement_timeout = 6 s"
    assert 6 <= waited < 60
    job = store.get_job(job_id)
    assert job.status == "failed" and "gave up after resources.placement_timeout" in (job.error or "")


def test_a_cluster_that_can_grow_is_waited_for(two_cpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEHIVE_CLUSTER_CAN_GROW", "1")
    assert require(Demand(1.0, 1.0), 3) == 3  # a GPU node may still come: wait for it, don't fail
    monkeypatch.setenv("PRUNEHIVE_CLUSTER_CAN_GROW", "0")
    with pytest.raises(PlacementError):
        require(Demand(1.0, 1.0), 3)
