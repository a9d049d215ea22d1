"""What the API returns; the CLI's ``--json`` output of ``jobs``/``show`` has the same shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from prunehive.platform.store import JobRecord, TrialRecord


class JobOut(BaseModel):
    job_id: str
    name: str
    kind: str
    owner: str | None
    status: str
    trials: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    mlflow_run_id: str | None
    cancel_requested: bool
    attempts: int

    @classmethod
    def of(cls, job: JobRecord, trials: int) -> JobOut:
        return cls(
            job_id=job.id,
            name=job.name,
            kind=job.kind,
            owner=job.owner,
            status=job.status,
            trials=trials,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            error=job.error,
            mlflow_run_id=job.mlflow_run_id,
            cancel_requested=job.cancel_requested,
            attempts=job.attempts,
        )


class JobDetail(JobOut):
    spec: dict[str, Any]
    summary: dict[str, Any] | None
    budget: int | None


class JobList(BaseModel):
    jobs: list[JobOut]


class TrialOut(BaseModel):
    candidate_id: int
    state: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    worker: str | None
    seconds: float | None

    @classmethod
    def of(cls, t: TrialRecord) -> TrialOut:
        return cls(
            candidate_id=t.candidate_id,
            state=t.state,
            params=t.params,
            result=t.result,
            error=t.error,
            worker=t.worker,
            seconds=t.seconds,
        )


class TrialList(BaseModel):
    job_id: str
    trials: list[TrialOut]


class Submitted(BaseModel):
    job_id: str
    status: str


class Health(BaseModel):
    status: str
    database: str
    backend: str | None
    dispatcher: dict[str, int] | None
