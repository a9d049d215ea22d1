"""Child runs written in bulk read back exactly as MLflow's own create_run/log_batch/set_terminated make them."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from prunehive.platform.tracking.tracker import Tracker

PARENT = "mlflow.parentRunId"


def test_bulk_children_match_the_per_run_calls(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bulk = Tracker(uri, "bulk")
    assert bulk._sql_store is not None
    per_run = Tracker(uri, "bulk")
    per_run._sql_store = None  # the path a tracking server takes
    parent = bulk.start_parent("job", {}, {})
    trial = ({"sparsity.fc1": 0.5, "candidate_id": 3}, {"validation.accuracy": 0.9, "nan": float("nan")})
    tags = {"prunehive.kind": "trial", "prunehive.state": "complete"}
    failed = {"prunehive.kind": "trial", "prunehive.state": "failed"}
    ids = bulk.log_children(parent, [("trial-3", *trial, tags), ("trial-4", {"a": 1}, {}, failed)])
    (reference,) = per_run.log_children(parent, [("trial-3", *trial, tags)])

    client = MlflowClient(uri)
    ours, theirs = client.get_run(ids[0]), client.get_run(reference)
    assert ours.data.params == theirs.data.params
    assert ours.data.tags == theirs.data.tags and ours.data.tags[PARENT] == parent
    assert ours.data.metrics.keys() == theirs.data.metrics.keys()
    assert ours.data.metrics["validation.accuracy"] == 0.9
    assert (ours.info.status, ours.info.run_name, ours.info.lifecycle_stage) == ("FINISHED", "trial-3", "active")
    assert ours.info.artifact_uri == theirs.info.artifact_uri.replace(reference, ids[0])
    assert ours.info.end_time is not None
    assert client.get_run(ids[1]).info.status == "FAILED"
    # The UI's runs table and filters read the latest metrics: both paths are found alike.
    found = client.search_runs([bulk.experiment_id], "metrics.`validation.accuracy` > 0.5")
    assert {r.info.run_id for r in found} == {ids[0], reference}
    assert len(bulk.children(parent)) == 3
