"""A search reports the rule its weights competed by and the unpruned model beside its results.

Real search jobs on a real local Ray, SQLite job store and MLflow store (digits-mlp, tiny budgets): the
summary's ``per_row``/``rule`` and ``dense`` entry, the parent run's params and ``dense.*`` metrics, and a
level solver whose database has no level 0 still scoring the dense model itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.cli.summaries import print_summary
from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore


def run_search(home: Path, pruning: dict[str, Any]) -> dict[str, Any]:
    spec = {
        "kind": "search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.9, "metric": "wanda", **pruning},
        "search": {"strategy": "random", "budget": 4, "seed": 0, "baselines": ["uniform", "erk"]},
        "resources": {"workers": 1},
    }
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    return SearchRun(store, start_job(store, parse_spec(spec)), show_progress=False).run()


def prune_dense() -> dict[str, Any]:
    result = CliRunner().invoke(app, ["prune", "--task", "digits-mlp", "--sparsity", "0.9", "--json"])
    assert result.exit_code == 0, result.output
    dense: dict[str, Any] = json.loads(result.stdout)["dense"]
    return dense


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_per_row_search_reports_its_rule_and_the_dense_model(home: Path) -> None:
    result = run_search(home, {"per_row": True})
    assert result["per_row"] is True and result["rule"] == "per-row (Wanda paper)"
    dense = result["dense"]
    assert dense["achieved_sparsity"] == 0.0 and set(dense["metrics"]) == {"validation", "test"}
    assert dense["metrics"] == prune_dense()["metrics"]  # the same unpruned model as ``prune`` reports
    for entry in [result["best"], *result["baselines"].values()]:
        assert entry["achieved_sparsity"] > 0.85
        for split in ("validation", "test"):
            assert dense["metrics"][split]["accuracy"] >= entry["metrics"][split]["accuracy"]

    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["mlflow_run_id"]).data
    assert parent.params["per_row"] == "True" and parent.params["rule"] == "per-row (Wanda paper)"
    for split in ("validation", "test"):
        assert parent.metrics[f"dense.{split}.accuracy"] == pytest.approx(dense["metrics"][split]["accuracy"])
    assert json.loads(json.dumps(result)) == result


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
def test_a_level_solver_scores_the_dense_model_without_a_level_zero(home: Path) -> None:
    result = run_search(home, {"solver": "sparsegpt", "levels": [0.5, 0.7, 0.9]})
    assert result["per_row"] is False and result["rule"].startswith("layer-wide")
    assert result["dense"]["achieved_sparsity"] == 0.0 and not any(result["dense"]["layers"].values())
    assert result["dense"]["metrics"] == prune_dense()["metrics"]
    assert result["best"]["achieved_sparsity"] > 0.85


def test_the_printed_summary_starts_from_the_dense_model(capsys: pytest.CaptureFixture[str]) -> None:
    def entry(sparsity: float, acc: float) -> dict[str, Any]:
        split = {"accuracy": acc, "loss": 1.0 - acc, "objective": acc}
        scores = {"metrics": {"validation": split, "test": split}, "params": 100, "flops": 200}
        return {"layers": {"fc1": sparsity}, "achieved_sparsity": sparsity, **scores}

    summary = {
        **{"job_id": "0123456789", "status": "succeeded", "trials": 4, "quality": "accuracy"},
        **{"mlflow_run_id": "r", "tracking_uri": "u"},
        **{"best": {**entry(0.9, 0.5), "candidate_id": 2}, "baselines": {"uniform": entry(0.9, 0.2)}},
        **{"dense": entry(0.0, 0.9722), "per_row": True, "rule": "per-row (Wanda paper)"},
    }
    print_summary(summary)
    text = capsys.readouterr().out
    assert "per-row (Wanda paper)" in text and "0.9722" in text
    assert text.index("dense") < text.index("search (#2)") < text.index("uniform")
