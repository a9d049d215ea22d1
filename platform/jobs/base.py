"""Running any kind of job from the store: the CLI and the service's dispatcher start here.

``JobRun`` holds what every kind's driver shares: the job row, its spec, the MLflow tracker, and
how a job ends (succeeded; cancelled by Ctrl-C or the service; failed with the reason).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from prunehive.platform.jobs import job_kind
from prunehive.platform.spec.job import JobSpec, parse_spec
from prunehive.platform.store.jobs import JobCancelled, JobStore
from prunehive.platform.tracking.location import default_tracking_uri
from prunehive.platform.tracking.tracker import Status, Tracker


class JobRunner(Protocol):
    """Drives one job to the end; ``run()`` returns the summary that ``prunehive run --json`` prints."""

    def run(self) -> dict[str, Any]: ...


class JobRun:
    """Base of the drivers: built from the store row, so a resumed job needs only its id."""

    def __init__(
        self, store: JobStore, job_id: str, ray_address: str | None = None, show_progress: bool = True
    ) -> None:
        self.store = store
        self.job = store.get_job(job_id)
        self.job_id = self.job.id
        self.spec = parse_spec(self.job.spec)
        self.ray_address = ray_address
        self.show_progress = show_progress
        self.tracking_uri = self.spec.tracking.mlflow_uri or default_tracking_uri()
        self.tracker = Tracker(self.tracking_uri, self.spec.experiment)

    def succeed(self, parent: str, summary: dict[str, Any]) -> dict[str, Any]:
        self.store.set_summary(self.job_id, summary)
        self.store.set_status(self.job_id, "succeeded")
        self.tracker.finish_parent(parent, "FINISHED")
        return summary

    @contextmanager
    def ending(self) -> Iterator[None]:
        """Marks the job cancelled or failed, and its MLflow parent run KILLED or FAILED, when the body raises."""
        try:
            yield
        except KeyboardInterrupt as exc:
            reason = str(exc) or "interrupted by the user"  # SIGTERM says "terminated by signal 15"
            if isinstance(exc, JobCancelled):
                reason = "cancelled through the service"
            self._end("cancelled", reason, "KILLED")
            raise
        except Exception as exc:
            self._end("failed", f"{type(exc).__name__}: {exc}", "FAILED")
            raise

    def _end(self, status: str, error: str, run_status: Status) -> None:
        self.store.set_status(self.job_id, status, error=error)
        run_id = self.store.get_job(self.job_id).mlflow_run_id
        if run_id:
            self.tracker.finish_parent(run_id, run_status)


def job_runner(store: JobStore, job_id: str, ray_address: str | None = None, show_progress: bool = True) -> JobRunner:
    """The driver of the job's kind (from the registry in ``platform/jobs``)."""
    job = store.get_job(job_id)
    cls = job_kind(job.kind).driver_class()
    return cls(store, job.id, ray_address=ray_address, show_progress=show_progress)


def start_job(store: JobStore, spec: JobSpec, workers: int | None = None, metric: str | None = None) -> str:
    """Validate overrides through the spec model, then queue the job in the store."""
    data = spec.model_dump(mode="json")
    if workers:
        data["resources"]["workers"] = workers
    if metric:
        data["pruning"]["metric"] = metric
    checked = parse_spec(data)
    return store.create_job(checked.kind, checked.display_name, checked.model_dump(mode="json"))
