"""A federated search as a job, through the CLI on a real local Ray, SQLite job store and MLflow store: a
driver killed mid-search resumes without scoring any candidate twice, every trial has one child run, and
the summary sets the best candidate against uniform and ERK scored the same federated way."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from killed_driver import CLI, run_then_kill
from mlflow.tracking import MlflowClient

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
    killed = run_then_kill(spec, tmp_path, [HERE, HERE.parent], lambda store, job_id: store.count_trials(job_id) >= 5)
    store, job_id = killed.store, killed.job_id
    assert store.count_trials(job_id) < BUDGET
    assert store.get_job(job_id).status == "running"  # the driver died without a word

    resumed = killed.resume()
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
        [*CLI, "export", job_id[:8], "--out", str(out), "--json"], env=killed.env, capture_output=True, text=True
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    task = DigitsMLP()
    model = task.architecture()
    model.load_state_dict(torch.load(out / "model.pt"))
    test = task.evaluate(model, "test").quality  # the whole test split, central: every client's share
    assert test == pytest.approx(summary["best"]["metrics"]["test"]["accuracy"], abs=1e-9)
