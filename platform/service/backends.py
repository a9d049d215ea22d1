"""Where the dispatcher runs a job's driver: Ray's Jobs API on a cluster, or processes beside a local Ray head.

Both run the same thing, ``job_runner(store, job_id).run()``, which resumes from the store row;
they only differ in where the driver lives and how it is watched and stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any, Protocol

from prunehive.platform.store.jobs import JobRecord, JobStore

log = logging.getLogger("prunehive.service")
ALIVE = ("PENDING", "RUNNING")
KILL_AFTER_SECONDS = 6.0  # a driver still there this long after SIGTERM is killed (cancel within 10 s)


class Backend(Protocol):
    """Starts a job's driver and answers whether it still runs; ``poll`` returns why it ended, or None."""

    name: str

    def start(self, job: JobRecord) -> str: ...

    def poll(self, dispatch_id: str) -> str | None: ...

    def alive(self, dispatch_id: str) -> bool: ...

    def stop(self, dispatch_id: str) -> None: ...

    def logs(self, job: JobRecord) -> str: ...

    def close(self) -> None: ...


class _Driver:
    """One driver process, its log file, and when it is to be killed (a cancel it ignores)."""

    def __init__(self, job_id: str, proc: subprocess.Popen[bytes], log_file: IO[bytes]) -> None:
        self.job_id, self.proc, self.log_file = job_id, proc, log_file
        self.kill_at: float | None = None


class LocalBackend:
    """Each driver is its own process, ``prunehive run --resume ID --json``, on a Ray head this server
    starts (or the cluster at ``address``), with its output in the job's log file.

    A process per job is the isolation: Flower shuts Ray down in the process that ran a simulation,
    and a crashing or stuck library ends with its own process; the server and the other jobs keep
    their connections. ``stop`` sends the driver's process group SIGTERM (it ends the job
    ``cancelled``) and kills it ``KILL_AFTER_SECONDS`` later if it is still there.
    """

    name = "local"

    def __init__(
        self,
        store: JobStore,
        logs_dir: Path,
        address: str | None = None,
        num_cpus: int | None = None,
        entrypoint: list[str] | None = None,
    ) -> None:
        import ray  # local: keeps ray out of the API server, which validates specs

        # local: keeps ray out of the API server, which validates specs
        from prunehive.platform.jobs.cluster import connect_ray

        self.store, self.logs_dir = store, logs_dir
        logs_dir.mkdir(parents=True, exist_ok=True)
        connect_ray(address, num_cpus=num_cpus)
        self.address = ray.get_runtime_context().gcs_address  # the drivers attach here
        self.entrypoint = entrypoint or [sys.executable, "-m", "prunehive.platform.cli"]
        self.drivers: dict[str, _Driver] = {}
        self._lock = threading.Lock()

    def log_path(self, job_id: str) -> Path:
        return self.logs_dir / f"{job_id}.log"

    def start(self, job: JobRecord) -> str:
        dispatch_id = f"local-{job.id[:12]}-{job.attempts}-{uuid.uuid4().hex[:6]}"
        self._note(job.id, f"driver {dispatch_id} starts job {job.id}")
        env = {**os.environ, "RAY_ADDRESS": self.address, "PRUNEHIVE_DATABASE_URL": self.store.url}
        log_file = self.log_path(job.id).open("ab")
        proc = subprocess.Popen(
            [*self.entrypoint, "run", "--resume", job.id, "--json"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: a signal reaches the driver and its children
            preexec_fn=_die_with_parent,  # noqa: PLW1509  (one prctl call, no locks taken)
        )
        with self._lock:
            self.drivers[dispatch_id] = _Driver(job.id, proc, log_file)
        return dispatch_id

    def _note(self, job_id: str, line: str) -> None:
        """The dispatcher's own lines in the job's log."""
        log.info("%s", line)
        with self.log_path(job_id).open("a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line.rstrip()}\n")

    def poll(self, dispatch_id: str) -> str | None:
        with self._lock:
            driver = self.drivers.get(dispatch_id)
        if driver is None:
            return "this server does not know the driver"
        code = driver.proc.poll()
        if code is None:
            if driver.kill_at is not None and time.monotonic() > driver.kill_at:
                _signal_group(driver.proc.pid, signal.SIGKILL)
            return None
        with self._lock:
            self.drivers.pop(dispatch_id, None)
        driver.log_file.close()
        last = _last_line(self.log_path(driver.job_id))
        return f"the driver exited with code {code}" + (f": {last}" if last else "")

    def alive(self, dispatch_id: str) -> bool:
        with self._lock:
            driver = self.drivers.get(dispatch_id)
        return driver is not None and driver.proc.poll() is None

    def stop(self, dispatch_id: str) -> None:
        with self._lock:
            driver = self.drivers.get(dispatch_id)
        if driver is not None and driver.kill_at is None:
            driver.kill_at = time.monotonic() + KILL_AFTER_SECONDS
            _signal_group(driver.proc.pid, signal.SIGTERM)

    def logs(self, job: JobRecord) -> str:
        path = self.log_path(job.id)
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        """Kill the drivers (their jobs stay ``running``; the next server resumes them), then Ray."""
        import ray  # local: keeps ray out of the API server, which validates specs

        with self._lock:
            drivers = list(self.drivers.values())
            self.drivers.clear()
        for driver in drivers:
            _signal_group(driver.proc.pid, signal.SIGKILL)
            driver.proc.wait()
            driver.log_file.close()
        ray.shutdown()


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _last_line(path: Path) -> str:
    """The driver's last words (its one-line error), for the dispatcher's reason."""
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 4096))
        lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _die_with_parent() -> None:
    """In the forked driver: SIGKILL when the server dies, as the old driver threads did (Linux)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


class RayJobsBackend:
    """Each driver is a Ray job (``prunehive run --resume ID``) submitted to the cluster's dashboard.

    Ray runs each entrypoint as its own process: the same isolation as ``LocalBackend``. ``stop``
    is Ray's job stop: SIGTERM (the driver ends the job ``cancelled``), SIGKILL after
    ``RAY_JOB_STOP_WAIT_TIME_S`` (set here to ``KILL_AFTER_SECONDS`` unless the operator set it).
    """

    name = "ray-jobs"

    def __init__(self, address: str, env: dict[str, str], entrypoint: str = "prunehive") -> None:
        # local: keeps ray out of the API server, which validates specs
        from ray.job_submission import JobSubmissionClient

        self.address, self.env, self.entrypoint = address, env, entrypoint
        self.client = JobSubmissionClient(address)

    def start(self, job: JobRecord) -> str:
        submission_id = f"prunehive-{job.id[:12]}-{job.attempts}-{uuid.uuid4().hex[:6]}"
        command = f"{self.entrypoint} run --resume {shlex.quote(job.id)} --json"
        self.client.submit_job(
            entrypoint=command,
            submission_id=submission_id,
            runtime_env={"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(int(KILL_AFTER_SECONDS)), **self.env}},
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
