"""Tracker against a real MLflow store (SQLite backend, local artifacts) in tmp_path."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.entities import ViewType  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from prunehive.platform.settings import prunehive_home  # noqa: E402
from prunehive.platform.tracking import plots  # noqa: E402
from prunehive.platform.tracking.location import default_artifact_root, default_tracking_uri  # noqa: E402
from prunehive.platform.tracking.tracker import (  # noqa: E402
    EXPERIMENT_KIND,
    TAG_EXPERIMENT_KIND,
    TAG_JOB_ID,
    TAG_STATE,
    Tracker,
)

PARENT = "mlflow.parentRunId"


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    home = tmp_path_factory.mktemp("prunehive-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNEHIVE_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        return Tracker(f"sqlite:///{home / 'mlflow.db'}", "prunehive-test")


def child_runs(tracker: Tracker, parent: str, view: int = ViewType.ACTIVE_ONLY) -> list:
    client = MlflowClient(tracker.tracking_uri)
    return list(client.search_runs([tracker.experiment_id], f"tags.`{PARENT}` = '{parent}'", run_view_type=view))


def test_default_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNEHIVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    assert default_artifact_root() == (tmp_path / "home" / "mlartifacts").as_uri()
    assert (tmp_path / "home").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert default_tracking_uri() == "http://mlflow:5000"


def test_prunehive_home_expands_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PRUNEHIVE_HOME", "~/ph")
    assert prunehive_home() == tmp_path / "ph" and (tmp_path / "ph").is_dir()
    assert default_tracking_uri() == f"sqlite:///{tmp_path / 'ph' / 'mlflow.db'}"


def test_experiments_are_model_training_experiments(tracker: Tracker) -> None:
    """MLflow 3's UI opens a GenAI overview unless the experiment says it holds model-training runs."""
    assert tracker.client.get_experiment(tracker.experiment_id).tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND
    older = tracker.client.create_experiment("made-without-the-tag")  # e.g. by an earlier prunehive
    assert TAG_EXPERIMENT_KIND not in tracker.client.get_experiment(older).tags
    again = Tracker(tracker.tracking_uri, "made-without-the-tag")
    assert again.experiment_id == older
    assert tracker.client.get_experiment(older).tags[TAG_EXPERIMENT_KIND] == EXPERIMENT_KIND


def test_experiment_artifacts_live_under_prunehive_home(tracker: Tracker) -> None:
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.artifact_location.endswith("/mlartifacts/prunehive-test")
    assert Tracker(tracker.tracking_uri, "prunehive-test").experiment_id == tracker.experiment_id
    database = tracker.tracking_uri.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(database)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_parent_and_children_through_background_logger(tracker: Tracker) -> None:
    parent = tracker.start_parent(
        "0123456789abcdef", {"strategy": "random", "budget": 5, "target": 0.7}, {"task": "mlp"}
    )
    seen: list[tuple[int, str]] = []
    logger = tracker.background(parent, on_logged=lambda key, run_id: seen.append((key, run_id)))
    for i in range(5):
        state = "failed" if i == 4 else "complete"
        logger.submit(
            i, f"trial-{i}", {"layer.0": 0.1 * i, "layer.1": 0.5}, {"val_acc": 0.9 - 0.01 * i}, {TAG_STATE: state}
        )
    ids = logger.close(timeout=60)
    assert sorted(ids) == list(range(5)) and sorted(seen) == sorted(ids.items())
    tracker.log_metrics(parent, {"best_val_acc": 0.9}, step=5)
    tracker.finish_parent(parent, "FINISHED")

    runs = child_runs(tracker, parent)
    assert len(runs) == 5
    by_id = {run.info.run_id: run for run in runs}
    for key, run_id in ids.items():
        run = by_id[run_id]
        assert run.info.run_name == f"trial-{key}"
        assert run.data.params == {"layer.0": str(0.1 * key), "layer.1": "0.5"}
        assert run.data.metrics["val_acc"] == pytest.approx(0.9 - 0.01 * key)
        assert run.data.tags[PARENT] == parent
        assert run.info.status == ("FAILED" if key == 4 else "FINISHED")
    parent_run = tracker.client.get_run(parent)
    assert parent_run.data.tags[TAG_JOB_ID] == "0123456789abcdef"
    assert parent_run.info.run_name == "job-01234567"
    assert parent_run.data.params["budget"] == "5" and parent_run.data.metrics["best_val_acc"] == 0.9
    running = tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'RUNNING'")
    assert not running


def test_background_errors_are_raised_not_swallowed(tracker: Tracker) -> None:
    logger = tracker.background("no-such-parent-run")
    tracker_log_child = tracker.log_child

    def broken(*args: object) -> str:
        raise OSError("store unreachable")

    tracker.log_child = broken  # type: ignore[method-assign]
    try:
        logger.submit("k", "trial", {}, {}, {})
        with pytest.raises(RuntimeError, match="store unreachable"):
            logger.close(timeout=10)
    finally:
        tracker.log_child = tracker_log_child  # type: ignore[method-assign]


def test_sweep_after_crash(tracker: Tracker) -> None:
    parent = tracker.start_parent("crashed-job", {"budget": 3}, {})
    recorded = tracker.log_child(parent, "recorded", {"a": 1}, {"m": 1.0}, {})
    orphan = tracker.log_child(parent, "orphan", {"a": 2}, {"m": 2.0}, {})
    running_kept = tracker.client.create_run(tracker.experiment_id, tags={PARENT: parent}).info.run_id
    running_lost = tracker.client.create_run(tracker.experiment_id, tags={PARENT: parent}).info.run_id
    tracker.resume_parent(parent)
    assert tracker.client.get_run(parent).info.status == "RUNNING"

    assert tracker.sweep(parent, keep={recorded, running_kept}) == 3
    alive = {run.info.run_id: run.info.status for run in child_runs(tracker, parent)}
    assert alive == {recorded: "FINISHED", running_kept: "FINISHED"}
    deleted = {run.info.run_id for run in child_runs(tracker, parent, ViewType.DELETED_ONLY)}
    assert deleted == {orphan, running_lost}
    assert tracker.sweep(parent, keep={recorded, running_kept}) == 0
    tracker.finish_parent(parent, "KILLED")
    assert not tracker.client.search_runs([tracker.experiment_id], "attributes.status = 'RUNNING'")


def test_batches_split_at_mlflow_limits(tracker: Tracker) -> None:
    parent = tracker.start_parent("wide", {f"p{i}": i for i in range(250)}, {})
    tracker.log_metrics(parent, {f"m{i}": float(i) for i in range(1500)}, step=1)
    run = tracker.client.get_run(parent)
    assert len(run.data.params) == 250 and len(run.data.metrics) == 1500
    tracker.finish_parent(parent)


def test_artifacts_model_and_plots(tracker: Tracker, tmp_path: Path) -> None:
    import torch

    parent = tracker.start_parent("artifacts", {}, {})
    tracker.log_dict(parent, {"best": [0.1, 0.2]}, "best.json")
    tracker.log_text(parent, "hello", "notes/readme.txt")
    (tmp_path / "spec.yaml").write_text("task: mlp\n")
    tracker.log_file(parent, tmp_path / "spec.yaml", "spec")

    figures = {
        "best.png": plots.best_so_far([0.5, 0.6, float("nan"), 0.55, 0.7], True, {"uniform": 0.6}, "val acc"),
        "pareto.png": plots.pareto_front(
            [(0.5, 0.9), (0.7, 0.8), (0.6, 0.7)],
            [(0.5, 0.9), (0.7, 0.8)],
            "sparsity",
            "val acc",
            {"uniform": (0.7, 0.75)},
        ),
        "layers.png": plots.layer_sparsity(
            [f"blocks.{i}.fc" for i in range(24)], [0.5] * 24, {"uniform": [0.7] * 24, "erk": [0.6] * 24}
        ),
    }
    for name, fig in figures.items():
        fig.savefig(tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size > 5000
        tracker.log_figure(parent, fig, f"plots/{name}")

    model = torch.nn.Linear(4, 2)
    before = mlflow.get_tracking_uri()
    uri = tracker.log_model(parent, model)
    assert mlflow.get_tracking_uri() == before
    tracker.finish_parent(parent)

    logged = tracker.client.get_logged_model(uri.removeprefix("models:/"))
    assert logged.experiment_id == tracker.experiment_id and logged.source_run_id == parent
    loaded = mlflow.pytorch.load_model(logged.artifact_location)
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))

    listed = {f.path for f in tracker.client.list_artifacts(parent)}
    assert {"best.json", "notes", "spec", "plots"} <= listed
    assert {f.path for f in tracker.client.list_artifacts(parent, "plots")} == {f"plots/{n}" for n in figures}


def test_background_logger_throughput(tracker: Tracker) -> None:
    parent = tracker.start_parent("throughput", {}, {})
    logger = tracker.background(parent)
    n = 40
    start = time.perf_counter()
    for i in range(n):
        logger.submit(i, f"t{i}", {f"layer.{j}": 0.5 for j in range(24)}, {"val_acc": 0.9, "sparsity": 0.7}, {})
    submitted = time.perf_counter() - start
    assert len(logger.close(timeout=60)) == n
    elapsed = time.perf_counter() - start
    tracker.finish_parent(parent)
    print(
        f"\nChildLogger on SQLite: {n / elapsed:.1f} children/s ({1000 * elapsed / n:.1f} ms each); "
        f"submit() took {1e6 * submitted / n:.0f} us per child"
    )
