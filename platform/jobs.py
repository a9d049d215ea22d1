"""One entry point that runs any kind of job from the store: the CLI and the service's dispatcher use it."""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from prunehive.platform.store import JobStore

RUNNERS: dict[str, str] = {
    "search": "prunehive.platform.runner:SearchRun",
    "metric-search": "prunehive.platform.runner:SearchRun",
    "federated": "prunehive.platform.federated_run:FederatedRun",
    "benchmark": "prunehive.platform.benchmark:BenchmarkRun",
}


class JobRunner(Protocol):
    """Drives one job to the end; ``run()`` returns the summary that ``prunehive run --json`` prints."""

    def run(self) -> dict[str, Any]: ...


def job_runner(store: JobStore, job_id: str, ray_address: str | None = None, show_progress: bool = True) -> JobRunner:
    """The runner for the job's kind, built from the store row (so a resumed job needs only its id)."""
    job = store.get_job(job_id)
    module, _, name = RUNNERS[job.kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    runner: JobRunner = cls(store, job.id, ray_address=ray_address, show_progress=show_progress)
    return runner
