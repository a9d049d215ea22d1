"""Signals and early errors of the CLI, each through a real subprocess:

- SIGTERM to ``prunehive run`` does what Ctrl-C does: the job ends ``cancelled``, its MLflow run
  ``KILLED``, its actors are released, and ``run --resume`` finishes it without repeating a trial;
- a task that cannot be built fails before any job row exists: one line, exit 2;
- SIGTERM to ``prunehive ui`` stops its whole process group (``mlflow server`` and its workers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from mlflow_seed import seed_mlflow

from prunehive.platform.cli.signals import group_alive
from prunehive.platform.store.jobs import JobStore

HERE = Path(__file__).resolve().parent
CLI = [sys.executable, "-m", "prunehive.platform.cli"]


@pytest.fixture(scope="module")
def shared_ray() -> Iterator[str]:
    """A 2-CPU Ray the drivers attach to, so the test can see their actors go; its workers import fault_tasks."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), old]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield str(ray.get_runtime_context().gcs_address)
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old


def env_for(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PRUNEHIVE_HOME=str(home), PYTHONPATH=str(HERE), **extra)
    for name in ("MLFLOW_TRACKING_URI", "PRUNEHIVE_DATABASE_URL", "RAY_ADDRESS"):
        if name not in extra:
            env.pop(name, None)
    seed_mlflow(home)
    return env


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} not seen within {timeout:.0f} s"
        time.sleep(0.2)


@pytest.mark.ray
def test_sigterm_cancels_the_run_and_resume_finishes_it(tmp_path: Path, shared_ray: str) -> None:
    budget = 30
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "kind": "search",
                "task": "fault_tasks:slow",
                "pruning": {"sparsity": 0.8},
                "search": {"strategy": "random", "budget": budget, "seed": 2, "baselines": ["uniform"]},
                "resources": {"workers": 2, "batch": 1},
            }
        )
    )
    env = env_for(tmp_path, RAY_ADDRESS=shared_ray)
    proc = subprocess.Popen([*CLI, "run", str(spec), "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    store = JobStore(f"sqlite:///{tmp_path / 'prunehive.db'}")

    def started() -> bool:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        jobs = store.list_jobs()
        return bool(jobs) and store.count_trials(jobs[0].id) >= 3

    wait_until(started, 240, "three trials")
    job_id = store.list_jobs()[0].id
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr.decode()[-2000:]
    assert time.monotonic() - sent < 10
    assert b"Traceback" not in stderr and f"--resume {job_id}".encode() in stderr  # rich may wrap the line
    job = store.get_job(job_id)
    assert job.status == "cancelled" and job.error == "terminated by signal 15"
    done_before = store.count_trials(job_id)
    assert done_before < budget
    mlflow = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert mlflow.get_run(job.mlflow_run_id or "").info.status == "KILLED"
    wait_until(lambda: ray.available_resources().get("CPU") == 2.0, 30, "the actors released")

    resumed = subprocess.run([*CLI, "run", "--resume", job_id, "--json"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [t.candidate_id for t in store.trials(job_id)] == list(range(budget))
    assert store.get_job(job_id).status == "succeeded"
    assert mlflow.get_run(job.mlflow_run_id or "").info.status == "FINISHED"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("os:getcwd", "task 'os:getcwd': factory returned str, not a prunehive Task"),
        ("no_such_module:make", "cannot import module 'no_such_module'"),
    ],
)
def test_a_bad_task_fails_before_a_job_exists(tmp_path: Path, task: str, message: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"kind: search\ntask: '{task}'\nsearch: {{strategy: random, budget: 3}}\n")
    done = subprocess.run([*CLI, "run", str(spec)], env=env_for(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr
    assert JobStore(f"sqlite:///{tmp_path / 'prunehive.db'}").list_jobs() == []


def _children(pid: int) -> list[int]:
    return [child.pid for child in psutil.Process(pid).children()]


@pytest.mark.slow  # ~50 s, mostly the MLflow server's start-up; `prunehive run`'s SIGTERM test stays default
def test_sigterm_to_ui_stops_the_mlflow_server_and_its_workers(tmp_path: Path) -> None:
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ui = subprocess.Popen(
        [*CLI, "ui", "--port", str(port)], env=env_for(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:

        def serving() -> bool:
            assert ui.poll() is None, ui.communicate()[1][-2000:]
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(serving, 180, "the MLflow UI")
        (server,) = _children(ui.pid)
        group = os.getpgid(server)
        assert group == server != os.getpgid(ui.pid)  # its own group, with its web workers in it
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 143
        assert not group_alive(group)
    finally:
        if ui.poll() is None:
            ui.kill()
