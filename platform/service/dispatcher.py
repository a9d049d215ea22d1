"""The dispatcher: claims queued jobs (atomically), runs at most ``max_jobs`` at once, watches them.

Each server has one, in a background thread. A job it claims gets a dispatch id (its driver);
the dispatcher heartbeats the job row while the driver lives, so other replicas know it is
looked after. A driver that ends without closing its job (killed, lost with its node or server)
gets the job re-queued, and the next claim resumes it from its checkpoint; after
``max_attempts`` starts it is failed with the reason. On start, and every few seconds, jobs
left running by a dead server (ours before a restart, or a replica with a stale heartbeat) are
adopted when their driver still runs on Ray, else resumed the same way. A cancelled running job's
driver gets ``cancel_grace_seconds`` to stop by itself, then the backend stops it (SIGTERM, then kill).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from prunehive.platform.service.backends import Backend
from prunehive.platform.store.jobs import JobRecord, JobStore
from prunehive.platform.store.models import utcnow

log = logging.getLogger("prunehive.service")
START_RETRY_SECONDS = 5.0


@dataclass
class _Active:
    dispatch_id: str
    cancel_seen: float | None = None
    stopped: bool = False  # the backend was told to stop the driver
    beat: float = field(default_factory=time.monotonic)


class Dispatcher:
    def __init__(
        self,
        store: JobStore,
        backend: Backend,
        max_jobs: int = 2,
        poll_seconds: float = 1.0,
        server_name: str | None = None,
        stale_seconds: float = 60.0,
        max_attempts: int = 3,
        cancel_grace_seconds: float = 2.0,
    ) -> None:
        if max_jobs < 1:
            raise ValueError("max_jobs: must be at least 1")
        self.store, self.backend, self.max_jobs = store, backend, max_jobs
        self.poll_seconds, self.stale_seconds = poll_seconds, stale_seconds
        self.max_attempts, self.cancel_grace_seconds = max_attempts, cancel_grace_seconds
        self.server_name = server_name or socket.gethostname()
        self.claimer = f"{self.server_name}/{uuid.uuid4().hex[:8]}"  # new on every start: restarts are visible
        self.active: dict[str, _Active] = {}
        self.peak = 0  # most jobs this dispatcher ran at once (the load test reads it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reconcile = 0.0
        self._retry_at = 0.0  # after the cluster refused a driver, claim again only after a pause

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.reconcile()
        self._thread = threading.Thread(target=self._loop, name="prunehive-dispatcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # a database or Ray hiccup must not kill the loop
                log.warning("dispatcher: %s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self._stop.wait(self.poll_seconds)

    # -- one round -------------------------------------------------------------------------
    def step(self) -> None:
        for job_id in list(self.active):
            self._watch(job_id)
        if time.monotonic() - self._last_reconcile > max(5.0, self.poll_seconds):
            self.reconcile()
        while len(self.active) < self.max_jobs and not self._stop.is_set() and time.monotonic() >= self._retry_at:
            job = self.store.claim_next_job(self.claimer)
            if job is None:
                break
            self._launch(job)

    def _launch(self, job: JobRecord) -> None:
        try:
            dispatch_id = self.backend.start(job)
        except Exception as exc:  # e.g. Ray's job agent is not up yet: the job waits, its attempts are kept
            log.warning("job %s stays queued: the cluster refused its driver (%s)", job.id, str(exc).splitlines()[0])
            self.store.requeue(job.id, None, refund=True)
            self._retry_at = time.monotonic() + START_RETRY_SECONDS
            return
        self.store.set_dispatch(job.id, dispatch_id)
        self.active[job.id] = _Active(dispatch_id)
        self.peak = max(self.peak, len(self.active))
        log.info("job %s started (attempt %d) as %s on %s", job.id, job.attempts, dispatch_id, self.backend.name)

    def _watch(self, job_id: str) -> None:
        entry = self.active[job_id]
        reason = self.backend.poll(entry.dispatch_id)
        job = self.store.get_job(job_id)
        ours = job.status == "running" and job.dispatch_id == entry.dispatch_id
        if reason is not None:  # the driver has exited
            self.active.pop(job_id)
            if ours:
                self._driver_gone(job, reason)
            return
        if not ours:
            return  # a closed job's driver holds its slot until it exits (it may still be writing to MLflow)
        now = time.monotonic()
        if job.cancel_requested:
            entry.cancel_seen = entry.cancel_seen or now
            if now - entry.cancel_seen > self.cancel_grace_seconds and not entry.stopped:
                self.backend.stop(entry.dispatch_id)  # SIGTERM: every kind ends cancelled within seconds
                entry.stopped = True
        if now - entry.beat > min(5.0, self.stale_seconds / 4):
            self.store.heartbeat(job_id)
            entry.beat = now

    def _driver_gone(self, job: JobRecord, reason: str) -> None:
        """The job's driver ended with the job still running: resume it, or give up with the reason."""
        if job.cancel_requested:
            self.store.finish_if_running(job.id, "cancelled", "cancelled on request")
        elif job.attempts < self.max_attempts:
            if self.store.requeue(job.id, job.dispatch_id):
                log.info("job %s re-queued to resume (%s)", job.id, reason)
        else:
            error = f"gave up after {job.attempts} attempts; last: {reason}"
            self.store.finish_if_running(job.id, "failed", error)
            log.info("job %s failed: %s", job.id, error)

    def reconcile(self) -> None:
        """Jobs some dispatcher left running: adopt those whose driver lives, resume or fail the rest."""
        self._last_reconcile = time.monotonic()
        stale = utcnow() - timedelta(seconds=self.stale_seconds)
        for job in self.store.list_jobs(limit=10_000, status="running"):
            if job.id in self.active or job.claimed_by is None:  # claimed_by None: a `prunehive run` driver
                continue
            ours_before = job.claimed_by.split("/")[0] == self.server_name and job.claimed_by != self.claimer
            if not ours_before and job.heartbeat_at is not None and job.heartbeat_at > stale:
                continue  # another replica looks after it
            if job.dispatch_id and self.backend.alive(job.dispatch_id):
                if len(self.active) < self.max_jobs or ours_before:
                    self.active[job.id] = _Active(job.dispatch_id)
                    self.store.heartbeat(job.id)
                    log.info("job %s adopted: its driver %s still runs", job.id, job.dispatch_id)
                continue
            self._driver_gone(job, f"its server ({job.claimed_by}) stopped while it ran")

    def counts(self) -> dict[str, int]:
        return {"active": len(self.active), "max_jobs": self.max_jobs, "peak": self.peak}
