"""Search jobs end to end on a real local Ray, a real SQLite job store and a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.workers.contracts import EvalResult

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]


def spec_for(strategy: str, budget: int = 12, **search: Any) -> dict[str, Any]:
    return {
        "kind": "search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.9, "metric": "magnitude", "granularity": "unstructured"},
        "search": {"strategy": strategy, "budget": budget, "seed": 0, **search},
        "resources": {"workers": 2},
    }


def run_job(home: Path, spec: dict[str, Any]) -> tuple[JobStore, dict[str, Any]]:
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    job_id = start_job(store, parse_spec(spec))
    return store, SearchRun(store, job_id, show_progress=False).run()


@pytest.mark.parametrize("strategy", ["evolution", "nsga2", "bayesian", "rl", "random"])
def test_each_strategy_runs_end_to_end(home: Path, strategy: str) -> None:
    budget = 16 if strategy == "nsga2" else 12
    options = {"options": {"population": 8}} if strategy in ("evolution", "nsga2") else {}
    store, result = run_job(home, spec_for(strategy, budget, **options))
    assert result["status"] == "succeeded"
    assert result["trials"] == budget == store.count_trials(result["job_id"])
    assert set(result["baselines"]) == {"uniform", "global", "erk", "owl"}
    best = result["best"]
    assert best["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3) or strategy == "nsga2"
    assert {"validation", "test"} <= set(best["metrics"])
    json.dumps(result)
    # Trial rows hold the typed result's JSON: it reads back as the same object.
    rows = [t.result for t in store.trials(result["job_id"]) if t.result is not None]
    assert len(rows) == budget and all(EvalResult.from_dict(r).to_dict() == r for r in rows)

    client = MlflowClient(result["tracking_uri"])
    children = client.search_runs(
        [client.get_run(result["mlflow_run_id"]).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_run_id']}'",
        max_results=1000,
    )
    trials = [r for r in children if r.data.tags.get("prunehive.kind") == "trial"]
    assert len(trials) == budget
    assert len([r for r in children if r.data.tags.get("prunehive.kind") == "baseline"]) == 4
    assert all(r.info.status == "FINISHED" for r in children)
    assert {"sparsity.fc1", "sparsity.fc5"} <= set(trials[0].data.params)
    assert "validation.accuracy" in trials[0].data.metrics
    ids = {t.mlflow_run_id for t in store.trials(result["job_id"])}
    assert ids == {r.info.run_id for r in trials}
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert "best.test.accuracy" in parent.data.metrics


def test_spec_errors_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"search.strategy: 'evolve' is not one of evolution, nsga2"):
        parse_spec({"kind": "search", "search": {"strategy": "evolve"}})
    with pytest.raises(SpecError, match=r"pruning.sparsity"):
        parse_spec({"kind": "search", "pruning": {"sparsity": 1.5}})
    with pytest.raises(SpecError, match=r"resources.gpu: unknown field"):
        parse_spec({"kind": "search", "resources": {"gpu": 1}})
    assert parse_spec({"kind": "search", "task": "digits-mlp"}).search.budget == 100


def test_metric_search_end_to_end(home: Path) -> None:
    spec = {
        "kind": "metric-search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.8},
        "search": {"budget": 12, "seed": 0, "options": {"population": 6}},
        "resources": {"workers": 2},
    }
    store, result = run_job(home, spec)
    assert result["kind"] == "metric-search" and result["trials"] == 12
    assert set(result["baselines"]) == {"magnitude", "wanda", "snip"}
    assert all("error" not in b for b in result["baselines"].values())
    board = result["leaderboard"]
    assert board and board[0]["expression"] and {"validation", "test"} <= set(board[0]["metrics"])
    # Magnitude, Wanda and SNIP seed the first generation, so the best is at least as good as them.
    best_val = board[0]["metrics"]["validation"]["accuracy"]
    assert best_val >= max(b["metrics"]["validation"]["accuracy"] for b in result["baselines"].values()) - 1e-9
    client = MlflowClient(result["tracking_uri"])
    runs = client.search_runs(
        [client.get_run(result["mlflow_run_id"]).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{result['mlflow_run_id']}'",
        max_results=1000,
    )
    trials = [r for r in runs if r.data.tags.get("prunehive.kind") == "trial"]
    assert len(trials) == 12 and all("expression" in r.data.params for r in trials)
    artifacts = {a.path for a in client.list_artifacts(result["mlflow_run_id"])}
    assert {"leaderboard.json", "leaderboard.md"} <= artifacts


def test_metric_search_spec_rules() -> None:
    spec = parse_spec({"kind": "metric-search", "task": "digits-mlp"})
    assert spec.strategy == "gp-metric" and spec.search.baselines == ["magnitude", "wanda", "snip"]
    with pytest.raises(SpecError, match="metric-search uses gp-metric"):
        parse_spec({"kind": "metric-search", "search": {"strategy": "evolution"}})
    with pytest.raises(SpecError, match="use kind: metric-search"):
        parse_spec({"kind": "search", "search": {"strategy": "gp-metric"}})
    with pytest.raises(SpecError, match=r"pruning.metric: unknown operator 'foo' at position 4"):
        parse_spec({"kind": "search", "pruning": {"metric": "expr:mul(foo(W),X)"}})
