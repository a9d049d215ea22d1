"""The store's database: engines, migrations and transactions, shared by its job, trial and queue parts.

SQLite (WAL) is the default; the code stays dialect-neutral for PostgreSQL except the connect
pragmas and the migration lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Engine, Result, create_engine, event, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from prunehive.platform.store.models import Job

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 30_000
PG_MIGRATION_LOCK = 0x70726E68  # any constant shared by all prunehive processes


class StoreError(RuntimeError):
    """A database failure in one line; the SQLAlchemy error is kept as ``__cause__``."""


def check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(sorted(allowed))}")


def rowcount(result: Result[Any]) -> int:
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


class Database:
    """An engine on the store's URL, migrated to the latest schema on open; safe from several processes."""

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

    def _update_job(self, job_id: str, **values: Any) -> None:
        with self.session() as s:
            if rowcount(s.execute(update(Job).where(Job.id == job_id).values(**values))) == 0:
                raise KeyError(f"no job {job_id!r}")
