"""MLflow tracking through ``MlflowClient`` with explicit run ids: one parent run per job, one child per candidate.

Nothing here uses MLflow's fluent (active-run) API except :meth:`Tracker.log_model`, which MLflow 3 only
offers through the global tracking URI; that method is for the driver process only.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import mlflow
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from prunehive.platform.tracking.bulk_runs import BulkWriter, ChildSpec, bulk_writer, run_status
from prunehive.platform.tracking.child_logger import ChildLogger
from prunehive.platform.tracking.location import (
    default_artifact_root,
    is_local_store,
    store_init_lock,
    use_sqlite_wal,
)

TAG_JOB_ID = "prunehive.job_id"
TAG_STATE = "prunehive.state"  # "complete" | "failed", as search.strategy.OutcomeState
# MLflow 3 opens an experiment on its GenAI overview unless told it holds model-training runs; this is the
# experiment tag its UI reads (values genai_development / custom_model_development), so ours land on the runs table.
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
MAX_TAG_VAL_LENGTH = 8000
Status = Literal["FINISHED", "FAILED", "KILLED"]
T = TypeVar("T")
_FLUENT_LOCK = threading.Lock()
Child = tuple[str, Mapping[str, Any], Mapping[str, float], Mapping[str, Any]]  # name, params, metrics, tags


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _params(params: Mapping[str, Any]) -> list[Param]:
    return [Param(str(k), str(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in params.items()]


def _tags(tags: Mapping[str, Any]) -> list[RunTag]:
    return [RunTag(str(k), str(v)[:MAX_TAG_VAL_LENGTH]) for k, v in tags.items()]


def _metrics(metrics: Mapping[str, float], step: int | None) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(str(k), float(v), now, step or 0) for k, v in metrics.items()]


def _failed(tags: Mapping[str, Any]) -> bool:
    return str(tags.get(TAG_STATE, "")).lower() in ("failed", "fail")


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's process-global tracking URI at ``uri`` for the block, then restore it."""
    with _FLUENT_LOCK:
        previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None unsets it again


class Tracker:
    """One MLflow experiment; every call names its run id explicitly."""

    def __init__(self, tracking_uri: str, experiment: str, sqlite_wal: bool = True) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        with store_init_lock(tracking_uri):  # the client creates (and migrates) a new store on first use
            self.client = MlflowClient(tracking_uri)
            self.experiment_id = self._experiment_id(experiment)
        self._bulk: BulkWriter | None = bulk_writer(tracking_uri)  # None: MLflow's per-run calls
        self._artifact_root: str | None = None
        if sqlite_wal:
            use_sqlite_wal(tracking_uri)

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            location = None
            if is_local_store(self.tracking_uri):
                location = f"{default_artifact_root()}/{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"
            try:
                kind = {TAG_EXPERIMENT_KIND: EXPERIMENT_KIND}
                return self.client.create_experiment(name, artifact_location=location, tags=kind)
            except MlflowException:  # another process created it first
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        if TAG_EXPERIMENT_KIND not in found.tags:  # made before we tagged, or by someone else
            self.client.set_experiment_tag(found.experiment_id, TAG_EXPERIMENT_KIND, EXPERIMENT_KIND)
        return str(found.experiment_id)

    # -- runs ---------------------------------------------------------------------------------
    def start_parent(self, job_id: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id, tags={**tags, TAG_JOB_ID: job_id}, run_name=f"job-{job_id[:8]}"
        )
        self.log_params(run.info.run_id, params)
        return str(run.info.run_id)

    def start_child(self, parent_run_id: str, name: str) -> str:
        """A RUNNING child run of ``parent_run_id`` that the caller finishes with :meth:`finish_parent`."""
        run = self.client.create_run(self.experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent_run_id}, run_name=name)
        return str(run.info.run_id)

    def rename(self, run_id: str, name: str) -> None:
        self.client.update_run(run_id, name=name)

    def resume_parent(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def finish_parent(self, run_id: str, status: Status = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def _log_batch(self, run_id: str, metrics: list[Metric], params: list[Param], tags: list[RunTag]) -> None:
        """As few ``log_batch`` calls as MLflow's limits allow (100 params, 100 tags, 1000 metrics)."""
        param_chunks = list(_chunks(params, MAX_PARAMS_TAGS_PER_BATCH))
        tag_chunks = list(_chunks(tags, MAX_PARAMS_TAGS_PER_BATCH))
        metric_chunks = list(_chunks(metrics, MAX_METRICS_PER_BATCH - MAX_PARAMS_TAGS_PER_BATCH * 2))
        for i in range(max(len(param_chunks), len(tag_chunks), len(metric_chunks))):
            self.client.log_batch(
                run_id,
                metrics=metric_chunks[i] if i < len(metric_chunks) else (),
                params=param_chunks[i] if i < len(param_chunks) else (),
                tags=tag_chunks[i] if i < len(tag_chunks) else (),
                synchronous=True,
            )

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._log_batch(run_id, _metrics(metrics, step), [], [])

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self._log_batch(run_id, [], _params(params), [])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self._log_batch(run_id, [], [], _tags(tags))

    def log_child(
        self,
        parent_run_id: str,
        name: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, float],
        tags: Mapping[str, Any],
    ) -> str:
        """A finished child run of ``parent_run_id`` (FAILED when ``tags[TAG_STATE]`` is "failed")."""
        return self.log_children(parent_run_id, [(name, params, metrics, tags)])[0]

    def log_children(self, parent_run_id: str, runs: Sequence[Child]) -> list[str]:
        """Finished child runs of ``parent_run_id``, their ids in order: on MLflow's SQL store all in one
        transaction (``bulk_runs``), elsewhere run by run."""
        specs = [
            ChildSpec(
                name,
                {p.key: p.value for p in _params(params)},
                dict(metrics),
                {t.key: t.value for t in _tags(tags)},
                run_status(_failed(tags)),
            )
            for name, params, metrics, tags in runs
        ]
        if self._bulk is not None:
            if self._artifact_root is None:
                self._artifact_root = str(self.client.get_experiment(self.experiment_id).artifact_location)
            return self._bulk.write(self.experiment_id, self._artifact_root, parent_run_id, specs)
        ids = []
        for spec in specs:
            run = self.client.create_run(
                self.experiment_id, tags={MLFLOW_PARENT_RUN_ID: parent_run_id}, run_name=spec.name
            )
            run_id = str(run.info.run_id)
            metric_list = _metrics(spec.metrics, None)
            self._log_batch(run_id, metric_list, _params(spec.params), _tags(spec.tags))
            self.client.set_terminated(run_id, status=spec.status)  # type: ignore[arg-type]
            ids.append(run_id)
        return ids

    def background(self, parent_run_id: str, on_logged: Callable[[Any, str], None] | None = None) -> ChildLogger:
        return ChildLogger(self, parent_run_id, on_logged)

    def children(self, parent_run_id: str, view: int = ViewType.ACTIVE_ONLY) -> list[Any]:
        """Every child run of ``parent_run_id`` (all pages)."""
        runs: list[Any] = []
        token: str | None = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                run_view_type=view,
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def sweep(self, parent_run_id: str, keep: set[str]) -> int:
        """After a crash: finish the kept children still RUNNING, delete every child not in ``keep``."""
        changed = 0
        for run in self.children(parent_run_id):
            run_id = run.info.run_id
            if run_id not in keep:
                self.client.delete_run(run_id)
                changed += 1
            elif run.info.status == "RUNNING":
                self.client.set_terminated(run_id, status="FAILED" if _failed(run.data.tags) else "FINISHED")
                changed += 1
        return changed

    # -- artifacts ----------------------------------------------------------------------------
    def log_dict(self, run_id: str, obj: dict[str, Any], path: str) -> None:
        self.client.log_dict(run_id, obj, path)

    def log_text(self, run_id: str, text: str, path: str) -> None:
        self.client.log_text(run_id, text, path)

    def log_file(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(local_path), artifact_path)

    def log_figure(self, run_id: str, fig: Any, path: str) -> None:
        self.client.log_figure(run_id, fig, path, save_kwargs={"dpi": 120, "bbox_inches": "tight"})

    def log_model(self, run_id: str, model: Any, name: str = "model") -> str:
        """Log a ``torch.nn.Module`` as an MLflow 3 LoggedModel linked to ``run_id``; returns ``models:/<id>``.
        A search logs its best candidate as ``prunehive export`` writes it (``PruningEngine.export``).

        Driver only: MLflow 3 resolves the store from the process-global tracking URI and, without an
        active run, would file the model under the default experiment. So we create the LoggedModel in our
        experiment ourselves and scope the global URI to this call (under a lock). Pickle format (``pt2``,
        MLflow 3's default, needs an input example); pinned requirements skip environment inference.
        """
        import mlflow.pytorch  # local: keeps torch out of the service and CLI start-up (jobs/base.py imports this)
        import torch  # local: as above

        logged = self.client.create_logged_model(self.experiment_id, name=name, source_run_id=run_id)
        quiet = logging.getLogger("mlflow.pytorch")  # its pickle-format warning on every log is noise here
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        with _global_tracking_uri(self.tracking_uri):
            info = mlflow.pytorch.log_model(
                model,
                name=name,
                run_id=run_id,
                model_id=logged.model_id,
                serialization_format="pickle",
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )
        quiet.setLevel(level)
        return str(info.model_uri)
