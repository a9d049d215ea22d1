"""The deployable topology for real: PostgreSQL, ``mlflow server``, a Ray head and a second node,
``prunehive server`` on the Jobs API. A job is submitted through the API (``prunehive submit``);
the second node is killed while the job runs; the job must still finish with every trial
recorded exactly once, in the store and in MLflow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow.tracking import MlflowClient
from topology import (
    RAY_ENV,
    PostgresServer,
    Processes,
    bin_path,
    free_port,
    http_ok,
    ray_worker_args,
    start_ray_head,
    wait_for,
)

pytestmark = pytest.mark.ray
BUDGET = 30
SPEC = f"""
kind: search
name: topology
task: digits-mlp
pruning: {{sparsity: 0.8, recovery_steps: 150}}  # ~1 s per evaluation: the kill lands mid-search
search: {{strategy: random, budget: {BUDGET}, seed: 3, baselines: [uniform]}}
resources: {{workers: 2, cpus_per_worker: 1, batch: 1}}
"""


@pytest.fixture()
def stack(postgres: PostgresServer, tmp_path: Path) -> Iterator[dict[str, Any]]:
    jobs_db, mlflow_db = postgres.new_database(), postgres.new_database()
    env = {
        "PATH": f"{bin_path('')}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PRUNEHIVE_HOME": str(tmp_path / "home"),
        "PRUNEHIVE_CACHE": str(tmp_path / "cache"),
        **RAY_ENV,
    }
    procs = Processes(tmp_path, env)
    ray_temp = Path(tempfile.mkdtemp(prefix="phr-", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    mlflow_port, api_port = free_port(), free_port()
    try:
        procs.start(
            "mlflow",
            [bin_path("mlflow"), "server", "--backend-store-uri", mlflow_db, "--serve-artifacts",
             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
             "--port", str(mlflow_port), "--workers", "1"],
        )  # fmt: skip
        gcs, dashboard = start_ray_head(procs, 2, ray_temp)
        procs.start("ray-worker", ray_worker_args(gcs, 2))
        token = json.loads(
            subprocess.run(
                [bin_path("prunehive"), "users", "add", "alice", "--json", "--database-url", jobs_db],
                env=env, check=True, capture_output=True, text=True,
            ).stdout
        )["token"]  # fmt: skip
        tracking = f"http://127.0.0.1:{mlflow_port}"
        procs.start(
            "prunehive",
            [bin_path("prunehive"), "server", "--host", "127.0.0.1", "--port", str(api_port),
             "--ray-address", f"http://127.0.0.1:{dashboard}", "--max-jobs", "2"],
            {"PRUNEHIVE_DATABASE_URL": jobs_db, "MLFLOW_TRACKING_URI": tracking},
        )  # fmt: skip
        wait_for(lambda: http_ok(f"{tracking}/health"), "mlflow server", 180)
        wait_for(lambda: http_ok(f"http://127.0.0.1:{api_port}/healthz"), "prunehive server", 120)
        yield {"url": f"http://127.0.0.1:{api_port}", "token": token, "env": env, "procs": procs,
               "dashboard": f"http://127.0.0.1:{dashboard}", "tracking": tracking}  # fmt: skip
    finally:
        procs.stop_all()
        shutil.rmtree(ray_temp, ignore_errors=True)


def worker_node_actors(dashboard: str) -> int:
    """EvalWorker actors alive on the second node (the one that is not the head)."""
    from ray.util.state import list_actors, list_nodes

    nodes = [n.node_id for n in list_nodes(address=dashboard) if not n.is_head_node and n.state == "ALIVE"]
    actors = list_actors(address=dashboard, filters=[("class_name", "=", "EvalWorker"), ("state", "=", "ALIVE")])
    return sum(1 for a in actors if a.node_id in nodes)


def test_a_job_survives_losing_a_ray_node(stack: dict[str, Any], tmp_path: Path) -> None:
    env = {**stack["env"], "PRUNEHIVE_SERVER": stack["url"], "PRUNEHIVE_TOKEN": stack["token"]}
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    submitted = subprocess.run(
        [bin_path("prunehive"), "submit", str(spec), "--json"], env=env, check=True, capture_output=True, text=True
    )
    job_id = json.loads(submitted.stdout)["job_id"]
    api = httpx.Client(base_url=stack["url"], headers={"Authorization": f"Bearer {stack['token']}"}, timeout=30)

    def job() -> dict[str, Any]:
        return dict(api.get(f"/jobs/{job_id}").json())

    wait_for(lambda: worker_node_actors(stack["dashboard"]) >= 1, "an evaluation actor on the second node", 300)
    wait_for(lambda: job()["trials"] >= 1, "the first trial", 300, every=0.2)
    before = job()["trials"]
    stack["procs"].kill("ray-worker")  # the node and every worker on it, at once
    assert before < BUDGET, "the job finished before the node was killed; make its evaluations slower"
    wait_for(lambda: job()["status"] in ("succeeded", "failed", "cancelled"), "the job", 400, every=2)
    final = job()
    assert final["status"] == "succeeded", (final["error"], stack["procs"].log("prunehive")[-3000:])
    trials = api.get(f"/jobs/{job_id}/trials").json()["trials"]
    ids = [t["candidate_id"] for t in trials]
    assert len(ids) == BUDGET == len(set(ids)) and all(t["state"] == "complete" for t in trials)
    assert len({t["worker"] for t in trials}) >= 2
    client = MlflowClient(stack["tracking"])
    parent = client.get_run(final["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`prunehive.kind` = 'trial'",
        max_results=1000,
    )
    candidates = [r.data.tags["prunehive.candidate_id"] for r in children]
    assert len(candidates) == BUDGET == len(set(candidates))
    shown = subprocess.run(
        [bin_path("prunehive"), "show", job_id, "--json"], env=env, check=True, capture_output=True, text=True
    )
    assert json.loads(shown.stdout)["status"] == "succeeded"
    logs = subprocess.run([bin_path("prunehive"), "logs", job_id], env=env, check=True, capture_output=True, text=True)
    assert f"run --resume {job_id}" in logs.stdout  # the Ray job's driver log
    assert stack["token"] not in stack["procs"].log("prunehive")
