"""The job store: jobs, their trials and the strategy checkpoint, in one SQL database.

``JobStore`` is the one object callers hold; its parts live beside it: the database and its
migrations (``db``), trial rows and the told history (``trials``), and the dispatcher's queue
(``queue``). Every evaluated candidate is one trial row, written in the same transaction as
the strategy checkpoint, so the two never disagree after a crash.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from prunehive.platform.store.db import StoreError, check
from prunehive.platform.store.models import JOB_KINDS, JOB_STATUSES, TERMINAL_STATUSES, Job, new_job_id, utcnow
from prunehive.platform.store.queue import JobCancelled, QueueStore
from prunehive.platform.store.records import JobRecord, TrialRecord, record
from prunehive.platform.store.trials import TrialStore

__all__ = ["JobCancelled", "JobRecord", "JobStore", "StoreError", "TrialRecord"]

HEX = frozenset("0123456789abcdef")


class JobStore(TrialStore, QueueStore):
    """Jobs and trials in a SQL database; safe to open from several processes at once."""

    def create_job(
        self, kind: str, name: str, spec: dict[str, Any], owner: str | None = None, status: str = "queued"
    ) -> str:
        check(kind, JOB_KINDS, "job kind")
        check(status, JOB_STATUSES, "job status")
        now = utcnow()
        running = status == "running"
        job = Job(id=new_job_id(), kind=kind, name=name, spec=spec, owner=owner, status=status, created_at=now)
        job.started_at = job.heartbeat_at = now if running else None
        job.finished_at = now if status in TERMINAL_STATUSES else None
        with self.session() as s:
            s.add(job)
        return job.id

    def get_job(self, job_id: str, owner: str | None = None) -> JobRecord:
        """By full id, or by any prefix that only one job's id starts with (as git takes commits).

        With ``owner``, a prefix matches only that owner's jobs, so a short prefix cannot reveal the ids
        of other users' jobs on the service (a full id still finds any job; the caller checks access).
        """
        with self.session() as s:
            job = s.get(Job, job_id)
            prefix = job_id.lower()
            if job is None and prefix and set(prefix) <= HEX:  # hex only: never a LIKE pattern
                where = [Job.id.startswith(prefix)] + ([Job.owner == owner] if owner is not None else [])
                matches = s.scalars(select(Job).where(*where).limit(2)).all()
                if len(matches) > 1:
                    count = s.scalar(select(func.count()).select_from(Job).where(*where))
                    raise KeyError(f"job id prefix {job_id!r} matches {count} jobs; give more characters")
                job = matches[0] if matches else None
            if job is None:
                raise KeyError(f"no job {job_id!r}")
            return record(JobRecord, job)

    def list_jobs(self, limit: int = 50, owner: str | None = None, status: str | None = None) -> list[JobRecord]:
        """Newest first."""
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(Job.owner == owner)
        if status is not None:
            check(status, JOB_STATUSES, "job status")
            query = query.where(Job.status == status)
        with self.session() as s:
            return [record(JobRecord, job) for job in s.scalars(query)]

    def set_status(self, job_id: str, status: str, error: str | None = None) -> None:
        """Also stamps started_at (first run), finished_at (terminal) and replaces the error text."""
        check(status, JOB_STATUSES, "job status")
        now = utcnow()
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise KeyError(f"no job {job_id!r}")
            job.status, job.error = status, error
            if status == "running":
                job.started_at = job.started_at or now
                job.heartbeat_at = now
            job.finished_at = now if status in TERMINAL_STATUSES else None

    def set_mlflow_run(self, job_id: str, run_id: str) -> None:
        self._update_job(job_id, mlflow_run_id=run_id)

    def set_summary(self, job_id: str, summary: dict[str, Any]) -> None:
        self._update_job(job_id, summary=summary)

    def heartbeat(self, job_id: str) -> None:
        self._update_job(job_id, heartbeat_at=utcnow())

    def save_state(self, job_id: str, state: dict[str, Any] | None) -> None:
        self._update_job(job_id, strategy_state=state)
