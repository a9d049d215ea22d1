"""Where the dispatcher runs a job's driver: Ray's Jobs API on a cluster, or threads beside a local Ray head.

Both run the same thing, ``job_runner(store, job_id).run()``, which resumes from the store row;
they only differ in where the driver lives and how it is watched and stopped.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Protocol

from prunehive.platform.store.jobs import JobRecord, JobStore

log = logging.getLogger("prunehive.service")
ALIVE = ("PENDING", "RUNNING")


class Backend(Protocol):
    """Starts a job's driver and answers whether it still runs; ``poll`` returns why it ended, or None."""

    name: str

    def start(self, job: JobRecord) -> str: ...

    def poll(self, dispatch_id: str) -> str | None: ...

    def alive(self, dispatch_id: str) -> bool: ...

    def stop(self, dispatch_id: str) -> None: ...

    def logs(self, job: JobRecord) -> str: ...

    def close(self) -> None: ...


class _ThreadLogs(logging.Handler):
    """Copies log records emitted on a job's thread into that job's log file."""

    def __init__(self, path: Path, thread_name: str) -> None:
        super().__init__(logging.INFO)
        self.path, self.thread_name = path, thread_name
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.threadName == self.thread_name and record.name != log.name:  # _note writes its own
            with self.path.open("a") as fh:
                fh.write(self.format(record) + "\n")


class LocalBackend:
    """Drivers as threads of the server process, on a Ray head it starts (or the cluster at ``address``).

    No process start per job: the driver shares the server's Ray connection, so tiny jobs are cheap.
    """

    name = "local"

    def __init__(
        self, store: JobStore, logs_dir: Path, address: str | None = None, num_cpus: int | None = None
    ) -> None:
        from prunehive.platform.jobs.search.driver import connect_ray

        self.store, self.logs_dir = store, logs_dir
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.threads: dict[str, threading.Thread] = {}
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()
        connect_ray(address, 1, num_cpus)

    def log_path(self, job_id: str) -> Path:
        return self.logs_dir / f"{job_id}.log"

    def start(self, job: JobRecord) -> str:
        dispatch_id = f"local-{job.id[:12]}-{job.attempts}-{uuid.uuid4().hex[:6]}"
        thread = threading.Thread(target=self._run, args=(job.id, dispatch_id), name=dispatch_id, daemon=True)
        with self._lock:
            self.threads[dispatch_id] = thread
        thread.start()
        return dispatch_id

    def _run(self, job_id: str, dispatch_id: str) -> None:
        from prunehive.platform.jobs.base import job_runner

        handler = _ThreadLogs(self.log_path(job_id), dispatch_id)
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            self._note(job_id, f"driver {dispatch_id} starts job {job_id}")
            summary = job_runner(self.store, job_id, show_progress=False).run()
            self._note(job_id, f"job {job_id} {summary.get('status')}: {summary.get('trials')} trials")
        except BaseException as exc:  # the thread must end quietly; the dispatcher reads the reason
            self.errors[dispatch_id] = f"{type(exc).__name__}: {exc}"
            self._note(job_id, f"job {job_id} ended: {self.errors[dispatch_id]}\n{traceback.format_exc(limit=5)}")
        finally:
            root.removeHandler(handler)

    def _note(self, job_id: str, line: str) -> None:
        """The dispatcher's own lines in the job's log, whatever the logging configuration."""
        log.info("%s", line.splitlines()[0])
        with self.log_path(job_id).open("a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line.rstrip()}\n")

    def poll(self, dispatch_id: str) -> str | None:
        with self._lock:
            thread = self.threads.get(dispatch_id)
        if thread is not None and thread.is_alive():
            return None
        with self._lock:
            self.threads.pop(dispatch_id, None)
        return self.errors.pop(dispatch_id, "the driver thread ended")

    def alive(self, dispatch_id: str) -> bool:
        with self._lock:
            thread = self.threads.get(dispatch_id)
        return thread is not None and thread.is_alive()

    def stop(self, dispatch_id: str) -> None:
        """Threads can't be killed; the driver stops itself at its next look at the cancel flag."""

    def logs(self, job: JobRecord) -> str:
        path = self.log_path(job.id)
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        import ray

        ray.shutdown()


class RayJobsBackend:
    """Each driver is a Ray job (``prunehive run --resume ID``) submitted to the cluster's dashboard."""

    name = "ray-jobs"

    def __init__(self, address: str, env: dict[str, str], entrypoint: str = "prunehive") -> None:
        from ray.job_submission import JobSubmissionClient

        self.address, self.env, self.entrypoint = address, env, entrypoint
        self.client = JobSubmissionClient(address)

    def start(self, job: JobRecord) -> str:
        submission_id = f"prunehive-{job.id[:12]}-{job.attempts}-{uuid.uuid4().hex[:6]}"
        command = f"{self.entrypoint} run --resume {shlex.quote(job.id)} --json"
        self.client.submit_job(
            entrypoint=command,
            submission_id=submission_id,
            runtime_env={"env_vars": self.env},
            metadata={"prunehive_job": job.id},
        )
        return submission_id

    def _status(self, dispatch_id: str) -> tuple[str, str]:
        try:
            info = self.client.get_job_info(dispatch_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return "MISSING", "the Ray cluster does not know the job"
            raise
        return str(info.status.value if hasattr(info.status, "value") else info.status), info.message or ""

    def poll(self, dispatch_id: str) -> str | None:
        status, message = self._status(dispatch_id)
        return None if status in ALIVE else f"Ray job {dispatch_id} {status}: {message}".strip()

    def alive(self, dispatch_id: str) -> bool:
        return self._status(dispatch_id)[0] in ALIVE

    def stop(self, dispatch_id: str) -> None:
        self.client.stop_job(dispatch_id)

    def logs(self, job: JobRecord) -> str:
        if not job.dispatch_id:
            return ""
        try:
            return self.client.get_job_logs(job.dispatch_id)
        except RuntimeError as exc:
            return f"(no logs from Ray for {job.dispatch_id}: {str(exc).splitlines()[0]})\n"

    def close(self) -> None:
        """Submitted drivers keep running on the cluster; a restarted server adopts them."""
