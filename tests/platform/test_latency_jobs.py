"""Latency in jobs: the nsga2 quality/latency front on digits-cnn channel, the budget penalty, spec rules.

Real local Ray, real SQLite job store, real MLflow store; latency timed by the workers themselves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.jobs.search.trials import latency_request
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.workers.contracts import EvalResult, LatencyRequest


def cnn_spec(search: dict[str, Any], **pruning: Any) -> dict[str, Any]:
    return {
        "kind": "search",
        "task": "digits-cnn",
        "pruning": {"sparsity": 0.5, "granularity": "channel", **pruning},
        "search": {"seed": 0, "baselines": ["uniform"], "latency": {"batch": 8, "repeats": 5, "warmup": 1}, **search},
        "resources": {"workers": 1},
    }


def run_job(home: Path, spec: dict[str, Any]) -> tuple[JobStore, dict[str, Any]]:
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    job_id = start_job(store, parse_spec(spec))
    return store, SearchRun(store, job_id, show_progress=False).run()


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_nsga2_quality_latency_front_carries_latency(home: Path) -> None:
    spec = cnn_spec(
        {"strategy": "nsga2", "objectives": ["quality", "latency"], "budget": 8, "options": {"population": 4}}
    )
    store, result = run_job(home, spec)
    assert result["status"] == "succeeded" and result["pareto_front"]
    for member in result["pareto_front"]:
        assert member["latency_ms"] > 0 and member["speedup"] > 0
    rows = [EvalResult.from_dict(t.result) for t in store.trials(result["job_id"]) if t.result]
    assert len(rows) == 8 and all(r.latency_ms is not None and r.speedup is not None for r in rows)
    # The strategy's second objective is the measured speedup.
    outcomes = {t.candidate_id: t.outcome for t in store.trials(result["job_id"])}
    assert all(outcomes[t.candidate_id][1] == t.result["speedup"] for t in store.trials(result["job_id"]))
    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_run_id']}'"
    )
    trials = [r for r in children if r.data.tags.get("prunehive.kind") == "trial"]
    assert len(trials) == 8 and all({"latency_ms", "speedup"} <= set(r.data.metrics) for r in trials)


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_latency_budget_penalises_slow_candidates(home: Path) -> None:
    store, result = run_job(home, cnn_spec({"strategy": "random", "budget": 6}, latency_budget=0.01))
    assert result["status"] == "succeeded" and "latency_ms" in result["best"]
    for t in store.trials(result["job_id"]):
        r = EvalResult.from_dict(t.result)
        assert r.speedup is not None and 1 / r.speedup > 0.01  # nothing is 100x faster: all penalised
        assert t.outcome[0] < r.objective() - 1.0


def test_latency_spec_rules() -> None:
    plain = parse_spec({"kind": "search", "task": "digits-cnn"})
    assert plain.search.latency is None and latency_request(plain) is None  # normal trials pay nothing
    front = parse_spec(cnn_spec({"strategy": "nsga2", "objectives": ["quality", "latency"], "latency": None}))
    assert latency_request(front) == LatencyRequest(batch=1, repeats=30, warmup=3)
    budget = parse_spec(cnn_spec({"latency": {"batch": 64}}, latency_budget=0.5))
    assert latency_request(budget) == LatencyRequest(batch=64, repeats=30, warmup=3)
    with pytest.raises(SpecError, match="pruning.latency_budget needs granularity channel or 2:4"):
        parse_spec(cnn_spec({}, granularity="unstructured", latency_budget=0.5))
    with pytest.raises(SpecError, match="search.objectives: latency needs granularity"):
        parse_spec(cnn_spec({"strategy": "nsga2", "objectives": ["quality", "latency"]}, granularity="4:8"))
    with pytest.raises(SpecError, match="use nsga2 for two"):
        parse_spec(cnn_spec({"strategy": "evolution", "objectives": ["quality", "latency"]}))
    with pytest.raises(SpecError, match="latency_budget"):
        parse_spec(cnn_spec({}, latency_budget=1.5))


def test_speedup_suite_json_sets_speedup_next_to_flops() -> None:
    args = ["bench", "--suite", "speedup", "--task", "digits-cnn", "--repeats", "2", "--warmup", "0", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["suite"] == "speedup" and set(obj["speedup_at_goal"]) == {"digits-cnn"}
    rows = obj["rows"]
    assert {(r["sparsity"], r["batch"]) for r in rows} == {(s, b) for s in (0.3, 0.5, 0.7) for b in (1, 64)}
    for r in rows:
        assert r["speedup"] > 0 and r["latency_ms"] > 0
        assert 0 < r["flops_ratio"] < 1 and r["flops_speedup"] == pytest.approx(1 / r["flops_ratio"])
