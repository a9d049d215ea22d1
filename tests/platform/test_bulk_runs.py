"""Child runs written in bulk read back exactly as MLflow's own create_run/log_batch/set_terminated make them;
a database at a schema revision the bulk writer does not know keeps MLflow's per-run calls."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mlflow.tracking import MlflowClient

from prunehive.platform.tracking.bulk_runs import bulk_writer
from prunehive.platform.tracking.tracker import Tracker

PARENT = "mlflow.parentRunId"


def test_bulk_children_match_the_per_run_calls(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bulk = Tracker(uri, "bulk")
    assert bulk._bulk is not None  # the installed MLflow's schema is the one written to (pyproject pins it)
    per_run = Tracker(uri, "bulk")
    per_run._bulk = None  # the path a tracking server takes
    parent = bulk.start_parent("job", {}, {})
    metrics = {"validation.accuracy": 0.9, "nan": float("nan"), "inf": float("-inf")}
    trial = ({"sparsity.fc1": 0.5, "candidate_id": 3}, metrics)
    tags = {"prunehive.kind": "trial", "prunehive.state": "complete"}
    failed = {"prunehive.kind": "trial", "prunehive.state": "failed"}
    ids = bulk.log_children(parent, [("trial-3", *trial, tags), ("trial-4", {"a": 1}, {}, failed)])
    (reference,) = per_run.log_children(parent, [("trial-3", *trial, tags)])

    client = MlflowClient(uri)
    ours, theirs = client.get_run(ids[0]), client.get_run(reference)
    assert ours.data.params == theirs.data.params
    assert ours.data.tags == theirs.data.tags and ours.data.tags[PARENT] == parent
    assert ours.data.metrics.keys() == theirs.data.metrics.keys()
    assert ours.data.metrics["validation.accuracy"] == 0.9 and ours.data.metrics["inf"] == theirs.data.metrics["inf"]
    assert (ours.info.status, ours.info.run_name, ours.info.lifecycle_stage) == ("FINISHED", "trial-3", "active")
    assert ours.info.artifact_uri == theirs.info.artifact_uri.replace(reference, ids[0])
    assert ours.info.end_time is not None
    assert client.get_run(ids[1]).info.status == "FAILED"
    # The UI's runs table and filters read the latest metrics: both paths are found alike.
    found = client.search_runs([bulk.experiment_id], "metrics.`validation.accuracy` > 0.5")
    assert {r.info.run_id for r in found} == {ids[0], reference}
    assert len(bulk.children(parent)) == 3


def test_an_unknown_schema_revision_keeps_the_per_run_calls(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    Tracker(uri, "made")  # MLflow creates and migrates the database
    assert bulk_writer(uri) is not None
    with sqlite3.connect(tmp_path / "mlflow.db") as con:  # as if another MLflow release had migrated it
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert bulk_writer(uri) is None
    assert bulk_writer("http://127.0.0.1:5000") is None and bulk_writer(f"file://{tmp_path / 'mlruns'}") is None
