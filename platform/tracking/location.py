"""Where runs are tracked: the default MLflow store and artifact root under PRUNEHIVE_HOME, and SQLite's WAL."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Iterator

from sqlalchemy.engine import make_url

from prunehive.platform.settings import prunehive_home


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else a SQLite store in ``$PRUNEHIVE_HOME`` (default ``./.prunehive``)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{prunehive_home() / 'mlflow.db'}"


def default_artifact_root() -> str:
    return (prunehive_home() / "mlartifacts").as_uri()


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def use_sqlite_wal(uri: str) -> bool:
    """Switch a SQLite store to write-ahead logging (persists in the file): about 3x cheaper commits, and
    readers such as ``mlflow ui`` stop blocking the writer. Not for databases on network file systems."""
    if not uri.startswith("sqlite:"):
        return False
    database = make_url(uri).database
    if not database or database == ":memory:":
        return False
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as con:
        return str(con.execute("PRAGMA journal_mode=WAL").fetchone()[0]).lower() == "wal"


@contextlib.contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Serialise the first touch of a SQLite store across processes: MLflow creates and migrates a new
    database on first use, and two drivers starting together would otherwise race on its tables."""
    database = make_url(uri).database if uri.startswith("sqlite:") else None
    if not database or database == ":memory:":
        yield
        return
    os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    with open(f"{database}.init.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
