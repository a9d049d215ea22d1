"""A federated search as a job, through the CLI on a real local Ray, SQLite job store and MLflow store: a
driver killed mid-search resumes without scoring any candidate twice, every trial has one child run, and
the summary sets the best candidate against uniform and ERK scored the same federated way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from prunehive.platform.store.jobs import JobStore
from prunehive.workers.tasks.digits import DigitsMLP

pytestmark = [pytest.mark.ray]
HERE = Path(__file__).resolve().parent
BUDGET = 20


class SlowClientsDigits(DigitsMLP):
    """Slow enough client scoring that a test can kill the driver mid-search (imported by the workers)."""

    def loss_fn(self, output: Any, target: Any) -> Any:
        time.sleep(0.05)
        return super().loss_fn(output, target)


def slow(seed: int = 0) -> SlowClientsDigits:
    return SlowClientsDigits(seed=seed)


def test_killed_federated_search_resumes_without_repeating_a_trial(tmp_path: Path) -> None:
    env = dict(os.environ, PRUNEHIVE_HOME=str(tmp_path), PYTHONPATH=str(HERE))
    env.pop("RAY_ADDRESS", None)
    spec = {
        "kind": "search",
        "task": "test_federated_search_jobs:slow",
        "pruning": {"sparsity": 0.8, "metric": "wanda"},
        "search": {
            "strategy": "evolution",
            "budget": BUDGET,
            "seed": 1,
            "evaluation": "federated",
            "baselines": ["uniform", "erk"],
            "options": {"population": 6},
        },
        "federated": {"clients": 4, "eval_fraction": 0.5, "partition": {"dirichlet": 1.0}},
        "resources": {"workers": 1, "batch": 1},
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    cli = [sys.executable, "-m", "prunehive.platform.cli"]
    proc = subprocess.Popen(
        [*cli, "run", str(spec_file), "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    store = JobStore(f"sqlite:///{tmp_path / 'prunehive.db'}")
    deadline, job_id = time.monotonic() + 300, None
    while time.monotonic() < deadline:
        jobs = store.list_jobs()
        if jobs and store.count_trials(jobs[0].id) >= 5:
            job_id = jobs[0].id
            break
        time.sleep(0.1)
    assert job_id is not None, proc.stderr.read() if proc.poll() is not None else "no trials recorded in time"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.count_trials(job_id) < BUDGET
    assert store.get_job(job_id).status == "running"  # the driver died without a word

    resumed = subprocess.run([*cli, "run", "--resume", job_id[:8], "--json"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = store.trials(job_id)
    assert [t.candidate_id for t in trials] == list(range(BUDGET))
    assert all(t.state == "complete" for t in trials)
    # Two of four clients score each candidate: about half of the validation rows, never all of them.
    validation = len(DigitsMLP().split("validation")[1])
    assert all(0 < (t.result or {})["tokens"] < validation for t in trials)
    assert store.get_job(job_id).status == "succeeded"

    summary = json.loads(resumed.stdout)
    assert set(summary["baselines"]) == {"uniform", "erk"}
    for entry in (summary["best"], *summary["baselines"].values()):
        assert 0.0 <= entry["metrics"]["test"]["accuracy"] <= 1.0
    job = store.get_job(job_id)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_run(job.mlflow_run_id or "").info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{job.mlflow_run_id}'",
        max_results=1000,
    )
    trial_runs = [r for r in runs if r.data.tags.get("prunehive.kind") == "trial"]
    assert sorted(int(r.data.tags["prunehive.candidate_id"]) for r in trial_runs) == list(range(BUDGET))
    assert all(r.info.status == "FINISHED" for r in runs)

    # The exported best is the model the clients scored: its masks come from their statistics again.
    out = tmp_path / "export"
    exported = subprocess.run(
        [*cli, "export", job_id[:8], "--out", str(out), "--json"], env=env, capture_output=True, text=True
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    task = DigitsMLP()
    model = task.architecture()
    model.load_state_dict(torch.load(out / "model.pt"))
    test = task.evaluate(model, "test").quality  # the whole test split, central: every client's share
    assert test == pytest.approx(summary["best"]["metrics"]["test"]["accuracy"], abs=1e-9)
