"""The job store: jobs, their trials and the strategy checkpoint, in one SQL database.

SQLite (WAL) is the default; the code stays dialect-neutral for PostgreSQL except the connect
pragmas and the migration lock. Every evaluated candidate is one trial row, written in the same
transaction as the strategy checkpoint, so the two never disagree after a crash.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Engine, Result, and_, create_engine, event, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from prunehive.platform.store.models import (
    JOB_KINDS,
    JOB_STATUSES,
    TERMINAL_STATUSES,
    TRIAL_STATES,
    Job,
    Trial,
    new_job_id,
    utcnow,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
MIN_PREFIX = 6
PG_MIGRATION_LOCK = 0x70726E68  # any constant shared by all prunehive processes
TRIAL_FIELDS = frozenset({"candidate_id", "state", "params", "result", "error", "worker", "seconds"})
REQUIRED_TRIAL_FIELDS = frozenset({"candidate_id", "state", "params"})


class StoreError(RuntimeError):
    """A database failure in one line; the SQLAlchemy error is kept as ``__cause__``."""


class JobCancelled(KeyboardInterrupt):
    """Raised in a driver whose job was cancelled through the service; handled like Ctrl-C."""


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


R = TypeVar("R", JobRecord, TrialRecord)


def _record(cls: type[R], row: Job | Trial) -> R:
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(sorted(allowed))}")


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _one_line(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines() or [""]
    return f"job store: {type(cause).__name__}: {lines[0]}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers run beside the one writer; busy_timeout makes writers wait, not fail.

    synchronous=NORMAL is safe in WAL mode (a crash of the process loses nothing; a power cut can
    lose the last commits but never breaks a transaction) and makes a commit cost no fsync.
    """
    cursor = dbapi_connection.cursor()
    for pragma in (f"busy_timeout={BUSY_TIMEOUT_MS}", "journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    if database in ("", ":memory:"):  # one shared connection, or every checkout is a new empty database
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class JobStore:
    """Jobs and trials in a SQL database; safe to open from several processes at once."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.engine = _make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._upgrade()

    @property
    def url(self) -> str:
        return self._url

    def close(self) -> None:
        self.engine.dispose()

    def _upgrade(self) -> None:
        """``alembic upgrade head`` under a database-wide lock, so two starting processes don't race.

        SQLite: BEGIN IMMEDIATE takes the write lock and makes the DDL transactional; foreign keys
        are off meanwhile because batch migrations copy and drop tables. PostgreSQL: an advisory lock.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        rendered = self.engine.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
        sqlite = self.engine.dialect.name == "sqlite"
        try:
            with self.engine.connect() as conn:
                try:
                    if sqlite:
                        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                    elif self.engine.dialect.name == "postgresql":
                        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
                    conn.commit()
                finally:
                    conn.rollback()
                    if sqlite:
                        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                        conn.commit()
        except SQLAlchemyError as exc:
            raise StoreError(_one_line(exc)) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any error; database errors become StoreError."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise StoreError(_one_line(exc)) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def create_job(
        self, kind: str, name: str, spec: dict[str, Any], owner: str | None = None, status: str = "queued"
    ) -> str:
        _check(kind, JOB_KINDS, "job kind")
        _check(status, JOB_STATUSES, "job status")
        now = utcnow()
        running = status == "running"
        job = Job(id=new_job_id(), kind=kind, name=name, spec=spec, owner=owner, status=status, created_at=now)
        job.started_at = job.heartbeat_at = now if running else None
        job.finished_at = now if status in TERMINAL_STATUSES else None
        with self.session() as s:
            s.add(job)
        return job.id

    def get_job(self, job_id: str) -> JobRecord:
        """By full id, or by a unique prefix of at least six characters (like git)."""
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None and len(job_id) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in job_id.lower()):
                matches = s.scalars(select(Job).where(Job.id.startswith(job_id.lower())).limit(2)).all()
                if len(matches) > 1:
                    raise KeyError(f"job id prefix {job_id!r} is ambiguous")
                job = matches[0] if matches else None
            if job is None:
                raise KeyError(f"no job {job_id!r}")
            return _record(JobRecord, job)

    def list_jobs(self, limit: int = 50, owner: str | None = None, status: str | None = None) -> list[JobRecord]:
        """Newest first."""
        query = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if owner is not None:
            query = query.where(Job.owner == owner)
        if status is not None:
            _check(status, JOB_STATUSES, "job status")
            query = query.where(Job.status == status)
        with self.session() as s:
            return [_record(JobRecord, job) for job in s.scalars(query)]

    def set_status(self, job_id: str, status: str, error: str | None = None) -> None:
        """Also stamps started_at (first run), finished_at (terminal) and replaces the error text."""
        _check(status, JOB_STATUSES, "job status")
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

    def _update_job(self, job_id: str, **values: Any) -> None:
        with self.session() as s:
            if _rowcount(s.execute(update(Job).where(Job.id == job_id).values(**values))) == 0:
                raise KeyError(f"no job {job_id!r}")

    def set_mlflow_run(self, job_id: str, run_id: str) -> None:
        self._update_job(job_id, mlflow_run_id=run_id)

    def set_summary(self, job_id: str, summary: dict[str, Any]) -> None:
        self._update_job(job_id, summary=summary)

    def heartbeat(self, job_id: str) -> None:
        self._update_job(job_id, heartbeat_at=utcnow())

    def save_state(self, job_id: str, state: dict[str, Any] | None) -> None:
        self._update_job(job_id, strategy_state=state)

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
                won = _rowcount(s.execute(claim)) == 1
            if won:
                return self.get_job(job_id)
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
            return _rowcount(s.execute(update(Job).where(*where).values(**values))) == 1

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
            if _rowcount(s.execute(done)) == 1:
                return "cancelled"
            flag = update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True)
            if _rowcount(s.execute(flag)) == 1:
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
        _check(status, TERMINAL_STATUSES, "terminal status")
        with self.session() as s:
            close = update(Job).where(Job.id == job_id, Job.status == "running")
            return _rowcount(s.execute(close.values(status=status, error=error, finished_at=utcnow()))) == 1

    def record_trial(
        self,
        job_id: str,
        candidate_id: int,
        *,
        state: str,
        params: dict[str, Any],
        result: dict[str, Any] | None = None,
        error: str | None = None,
        worker: str | None = None,
        seconds: float | None = None,
        strategy_state: dict[str, Any] | None = None,
    ) -> bool:
        """False (and nothing changed) when this candidate was already recorded."""
        row = {"candidate_id": candidate_id, "state": state, "params": params, "result": result}
        row |= {"error": error, "worker": worker, "seconds": seconds}
        return self.record_trials(job_id, [row], strategy_state) == 1

    def record_trials(
        self, job_id: str, rows: Iterable[Mapping[str, Any]], strategy_state: dict[str, Any] | None = None
    ) -> int:
        """Insert the trials not yet recorded and save the checkpoint, in one transaction.

        The first statement updates the job row (heartbeat and checkpoint), which locks it, so
        writers of one job take turns and the duplicate check cannot race. If no row is new the
        transaction is rolled back: nothing changes. Returns the number of trials inserted.
        """
        now = utcnow()
        batch: dict[int, dict[str, Any]] = {}
        for row in rows:
            if not row.keys() >= REQUIRED_TRIAL_FIELDS or not row.keys() <= TRIAL_FIELDS:
                raise ValueError(f"trial row needs {sorted(REQUIRED_TRIAL_FIELDS)}, may have {sorted(TRIAL_FIELDS)}")
            _check(row["state"], TRIAL_STATES, "trial state")
            values = {field: row.get(field) for field in TRIAL_FIELDS} | {"job_id": job_id, "created_at": now}
            batch.setdefault(int(row["candidate_id"]), values)
        if not batch:
            return 0
        job_values: dict[str, Any] = {"heartbeat_at": now}
        if strategy_state is not None:
            job_values["strategy_state"] = strategy_state
        with self.session() as s:
            if _rowcount(s.execute(update(Job).where(Job.id == job_id).values(**job_values))) == 0:
                raise KeyError(f"no job {job_id!r}")
            seen = select(Trial.candidate_id).where(Trial.job_id == job_id, Trial.candidate_id.in_(batch))
            done = set(s.scalars(seen))
            new = [values for candidate_id, values in batch.items() if candidate_id not in done]
            if not new:
                s.rollback()
                return 0
            s.execute(insert(Trial), new)
        return len(new)

    def trials(self, job_id: str) -> list[TrialRecord]:
        """Ordered by candidate id."""
        return self._trials(select(Trial).where(Trial.job_id == job_id))

    def trials_missing_mlflow(self, job_id: str) -> list[TrialRecord]:
        """Trials still to be logged to MLflow (e.g. the tracking server was down)."""
        return self._trials(select(Trial).where(Trial.job_id == job_id, Trial.mlflow_run_id.is_(None)))

    def _trials(self, query: Any) -> list[TrialRecord]:
        with self.session() as s:
            return [_record(TrialRecord, trial) for trial in s.scalars(query.order_by(Trial.candidate_id))]

    def count_trials(self, job_id: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Trial).where(Trial.job_id == job_id)) or 0

    def set_trial_mlflow_run(self, runs: Mapping[int, str] | Mapping[tuple[str, int], str]) -> int:
        """Keys are trial ids or (job_id, candidate_id); one transaction. Returns rows updated."""
        updated = 0
        with self.session() as s:
            for key, run_id in runs.items():
                if isinstance(key, tuple):
                    where = and_(Trial.job_id == key[0], Trial.candidate_id == key[1])
                else:
                    where = Trial.id == key
                updated += _rowcount(s.execute(update(Trial).where(where).values(mlflow_run_id=run_id)))
        return updated
