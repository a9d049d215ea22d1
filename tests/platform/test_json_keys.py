"""The ``--json`` contract: every job kind's ``run --json`` and ``prune --json`` keep their keys.

Scripts read these outputs, so their keys are recorded here (as the outputs had them when the
results became typed objects) and each kind runs once, with a tiny budget, through the real CLI
on a real local Ray and real SQLite and MLflow stores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.jobs.report_types import summary_from_dict
from prunehive.platform.jobs.summary_types import TrialRow
from prunehive.platform.service.schemas import TrialOut
from prunehive.platform.settings import default_database_url
from prunehive.platform.store.jobs import JobStore

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("local_ray")]
runner = CliRunner()

TINY = {"task": "digits-mlp", "pruning": {"sparsity": 0.8}, "resources": {"workers": 1}}
SPECS: dict[str, dict[str, Any]] = {
    "search": {"kind": "search", "search": {"strategy": "random", "budget": 4, "baselines": ["uniform"]}},
    "nsga2": {
        "kind": "search",
        "search": {"strategy": "nsga2", "budget": 4, "baselines": ["uniform"], "options": {"population": 4}},
    },
    "metric-search": {
        "kind": "metric-search",
        "search": {"budget": 4, "baselines": ["magnitude"], "options": {"population": 4}},
    },
    "benchmark": {
        "kind": "benchmark",
        "search": {"budget": 4},
        "benchmark": {"strategies": ["random"], "seeds": 1, "baselines": ["uniform"]},
    },
}
FEDERATED = {
    "kind": "federated",
    "task": "digits-mlp",
    "federated": {"clients": 2, "rounds": 1, "local_epochs": 1},
    "pruning": {"sparsity": 0.5},
}

SEARCH = ["job_id", "status", "trials", "quality", "best", "baselines", "mlflow_run_id", "tracking_uri", "timing"]
SEARCH += ["dense", "per_row", "rule"]  # added 2026-12-06: the unpruned model's entry and the comparison rule
TOP_LEVEL: dict[str, set[str]] = {
    "search": set(SEARCH),
    "nsga2": {*SEARCH, "pareto_front"},
    "metric-search": {*SEARCH, "kind", "leaderboard"},
    "benchmark": {
        *("kind", "task", "quality", "higher_is_better", "metric", "granularity", "budget", "seeds", "strategies"),
        *("targets", "trials", "table", "runs", "best", "baselines", "baselines_by_target", "job_id", "status"),
        *("mlflow_run_id", "tracking_uri", "report", "timing"),
        *("dense", "per_row", "rule"),  # added 2026-12-06
    },
    "federated": {
        *("job_id", "kind", "status", "task", "plan", "final", "bytes_up", "bytes_down", "dense_bytes_up"),
        *("dense_bytes_down", "failures", "uplink_reduction", "rounds", "mlflow_run_id", "tracking_uri", "timing"),
        *("per_row", "rule"),  # added 2026-12-06
        *("client_flops", "peak_client_bytes"),  # added 2026-12-06
    },
    "prune": {
        *("task", "metric", "granularity", "allocation", "target_sparsity", "requested", "metrics"),
        *("achieved_sparsity", "layers", "params", "flops", "seconds", "dense_params", "dense_flops", "quality"),
        *("skipped_layers", "solver"),  # solver: added 2026-12-01
        *("dense", "per_row", "rule"),  # added 2026-12-06
    },
}
ENTRY = {"layers", "achieved_sparsity", "metrics", "params", "flops"}  # a best or baseline candidate
BEST = {
    "search": {*ENTRY, "candidate_id"},
    "nsga2": {*ENTRY, "candidate_id"},
    "metric-search": {*ENTRY, "candidate_id", "expression"},
    "benchmark": {*ENTRY, "candidate_id", "strategy", "seed"},
}
SPLIT = {"accuracy", "loss", "objective"}


def invoke(args: list[str]) -> dict[str, Any]:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:]
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


@pytest.mark.parametrize("kind", [*SPECS, "federated"])
def test_run_json_keys(home: Path, kind: str) -> None:
    spec = FEDERATED if kind == "federated" else {**TINY, **SPECS[kind]}
    path = home / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    obj = invoke(["run", str(path), "--json"])
    assert set(obj) == TOP_LEVEL[kind]
    assert json.dumps(summary_from_dict(obj).to_dict()) == json.dumps(obj)  # the typed summary writes the same JSON
    store = JobStore(default_database_url())
    try:
        records = store.trials(obj["job_id"])
    finally:
        store.close()
    assert bool(records) == (kind not in ("benchmark", "federated"))  # a benchmark's trials are its cells' jobs'
    for record in records:  # the store's rows, typed and back (the API serves them through the same type)
        assert TrialRow.of(record).to_dict() == {k: getattr(record, k) for k in TrialRow.of(record).to_dict()}
        assert TrialOut.of(record).model_dump() == {k: getattr(record, k) for k in TrialOut.model_fields}
    if kind == "federated":
        assert set(obj["final"]) == {"test_accuracy", "sparsity", "client_accuracy", "layers"}
        return
    assert set(obj["best"]) == BEST[kind]
    assert set(obj["best"]["metrics"]) == {"validation", "test"}
    assert all(set(m) == SPLIT for m in obj["best"]["metrics"].values())
    assert all(set(b) == ENTRY for b in obj["baselines"].values())
    assert set(obj["dense"]) == ENTRY and obj["dense"]["achieved_sparsity"] == 0.0
    assert obj["per_row"] is False and obj["rule"] == "layer-wide"
    for entry in obj.get("pareto_front", []) + obj.get("leaderboard", []):
        assert set(entry) == BEST[kind]
    parent = MlflowClient(obj["tracking_uri"]).get_run(obj["mlflow_run_id"]).data
    assert parent.params["per_row"] == "False" and parent.params["rule"] == "layer-wide"
    dense_test = obj["dense"]["metrics"]["test"]["accuracy"]
    assert parent.metrics.get("dense.test.accuracy") == pytest.approx(dense_test)


def test_prune_json_keys() -> None:
    obj = invoke(["prune", "--task", "digits-mlp", "--sparsity", "0.8", "--json"])
    assert set(obj) == TOP_LEVEL["prune"]
    assert set(obj["metrics"]) == {"validation", "test"} and set(obj["metrics"]["test"]) == SPLIT
    assert set(obj["dense"]) == ENTRY and set(obj["dense"]["metrics"]) == {"validation", "test"}
