"""The job queue as the service's dispatcher uses it: claiming, requeueing and cancelling jobs,
each one conditional UPDATE, so replicas racing for the same row settle it in the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from prunehive.platform.store.db import Database, check, rowcount
from prunehive.platform.store.models import TERMINAL_STATUSES, Job, utcnow
from prunehive.platform.store.records import JobRecord, record


class JobCancelled(KeyboardInterrupt):
    """Raised in a driver whose job was cancelled through the service; handled like Ctrl-C."""


class QueueStore(Database):
    """Who runs which job: the dispatcher's side of the ``jobs`` table."""

    def claim_next_job(self, claimer: str) -> JobRecord | None:
        """Atomically take the oldest queued job (it becomes running), or None.

        PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so replicas claiming at once get different rows.
        SQLite has one writer at a time; the conditional UPDATE (``status = 'queued'``) still
        makes a lost race visible as rowcount 0, and we try the next row.
        """
        pick = select(Job.id).where(Job.status == "queued").order_by(Job.created_at, Job.id).limit(1)
        if self.engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        for _ in range(10):
            now = utcnow()
            with self.session() as s:
                job_id = s.scalar(pick)
                if job_id is None:
                    return None
                claim = (
                    update(Job)
                    .where(Job.id == job_id, Job.status == "queued")
                    .values(
                        status="running",
                        started_at=func.coalesce(Job.started_at, now),
                        heartbeat_at=now,
                        finished_at=None,
                        attempts=Job.attempts + 1,
                        claimed_by=claimer,
                        dispatch_id=None,
                    )
                )
                won = rowcount(s.execute(claim)) == 1
            if won:
                with self.session() as s:
                    return record(JobRecord, s.get_one(Job, job_id))
        return None

    def requeue(self, job_id: str, expected_dispatch: str | None, refund: bool = False) -> bool:
        """Put a running job whose driver is gone back in the queue (it resumes from its checkpoint).

        Conditional on the dispatch id, so two replicas that both saw the driver die requeue it once.
        ``refund``: the driver never started (the cluster refused it), so this start does not count.
        """
        with self.session() as s:
            same = Job.dispatch_id.is_(None) if expected_dispatch is None else Job.dispatch_id == expected_dispatch
            where = [Job.id == job_id, Job.status == "running", same]
            values: dict[str, Any] = {"status": "queued", "claimed_by": None, "dispatch_id": None}
            if refund:
                values["attempts"] = Job.attempts - 1
            return rowcount(s.execute(update(Job).where(*where).values(**values))) == 1

    def set_dispatch(self, job_id: str, dispatch_id: str) -> None:
        self._update_job(job_id, dispatch_id=dispatch_id, heartbeat_at=utcnow())

    def request_cancel(self, job_id: str) -> str:
        """A queued job is cancelled now; a running one is flagged and its driver stops itself.

        Returns the status after the request; raises ValueError for a job already finished.
        """
        now = utcnow()
        with self.session() as s:
            queued = update(Job).where(Job.id == job_id, Job.status == "queued")
            done = queued.values(status="cancelled", error="cancelled before it started", finished_at=now)
            if rowcount(s.execute(done)) == 1:
                return "cancelled"
            flag = update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True)
            if rowcount(s.execute(flag)) == 1:
                return "running"
            status = s.scalar(select(Job.status).where(Job.id == job_id))
        if status is None:
            raise KeyError(f"no job {job_id!r}")
        raise ValueError(f"job {job_id} already {status}; nothing to cancel")

    def cancel_requested(self, job_id: str) -> bool:
        with self.session() as s:
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def finish_if_running(self, job_id: str, status: str, error: str | None) -> bool:
        """Close a job whose driver ended without doing so itself (killed, or cancelled before it started)."""
        check(status, TERMINAL_STATUSES, "terminal status")
        with self.session() as s:
            close = update(Job).where(Job.id == job_id, Job.status == "running")
            return rowcount(s.execute(close.values(status=status, error=error, finished_at=utcnow()))) == 1
