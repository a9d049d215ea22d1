"""What the API returns; the CLI's ``--json`` output of ``jobs``/``show`` has the same shape.

This is a JSON boundary: a job's ``summary`` is served as the store holds it (its kind's type,
``platform/jobs/summary_types.py`` and ``report_types.py``, reads it back), and trial rows pass through
:class:`TrialRow`, so the API serves only rows of the recorded shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from prunehive.platform.jobs.summary_types import TrialRow
from prunehive.platform.store.jobs import JobRecord, TrialRecord


def _fields(model: type[BaseModel], record: object) -> dict[str, Any]:
    """The record's attributes that the model has, by reference (no copy of specs and summaries)."""
    return {name: getattr(record, name) for name in model.model_fields if hasattr(record, name)}


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
        return cls.model_validate({**_fields(cls, job), "job_id": job.id, "trials": trials})


class JobDetail(JobOut):
    spec: dict[str, Any]
    summary: dict[str, Any] | None  # the summary's JSON, as ``to_dict`` of its kind's type wrote it
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
        row = TrialRow.of(t).to_dict()
        return cls.model_validate({name: row[name] for name in cls.model_fields})


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
