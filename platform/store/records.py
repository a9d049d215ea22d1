"""What the store hands out: frozen copies of its rows, detached from any session."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, TypeVar

from prunehive.platform.store.models import Job, Trial


@dataclass(frozen=True, slots=True)
class JobRecord:
    id: str
    kind: str
    name: str
    owner: str | None
    status: str
    spec: dict[str, Any]
    strategy_state: dict[str, Any] | None
    summary: dict[str, Any] | None
    error: str | None
    mlflow_run_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    cancel_requested: bool = False
    attempts: int = 0
    claimed_by: str | None = None
    dispatch_id: str | None = None


@dataclass(frozen=True, slots=True)
class TrialRecord:
    id: int
    job_id: str
    candidate_id: int
    state: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    worker: str | None
    seconds: float | None
    mlflow_run_id: str | None
    created_at: datetime
    outcome: list[float] | None = None  # the values the strategy was told (None: recorded before 0003)


R = TypeVar("R", JobRecord, TrialRecord)


def record(cls: type[R], row: Job | Trial) -> R:
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})
