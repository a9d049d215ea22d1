"""Many finished child runs in one transaction of MLflow's SQL store, at a schema revision we know.

``create_run`` + ``log_batch`` + ``set_terminated`` cost about 35 statements in 14 sessions per run on
the SQLite store (20-60 ms on a loaded machine, ten times a fast search's budget per trial). Here the
same rows (the run, its tags, params, metrics and latest metrics) are inserted for a whole batch of
runs at once, so the UI shows exactly what the per-run calls would have made.

No MLflow internals are used: the rows go through SQLAlchemy Core over our own engine on the tracking
URI, into tables declared here as MLflow's migrations leave them at ``SCHEMA_REVISIONS`` (MLflow's own
alembic revision, read from the database when a tracker starts). A database at any other revision
(another MLflow release migrated it) gets no bulk writer, and the tracker keeps MLflow's public
per-run calls: correct, only slower. pyproject pins MLflow's minor release, so an install takes the
fast path; tests/platform/test_bulk_runs.py reads bulk rows back through the public client beside
the per-run calls' rows, which catches a change of meaning at the same revision.
"""

from __future__ import annotations

import logging
import math
import posixpath
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse, urlunparse

from mlflow.entities import LifecycleStage, RunStatus, SourceType
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME
from sqlalchemy import BigInteger, Boolean, Column, Float, Integer, MetaData, String, Table, create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

log = logging.getLogger("prunehive.tracking")
SCHEMA_REVISIONS = frozenset({"dc11669786a5"})  # MLflow 3.17's head; the tables below are as it leaves them
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")  # the URIs MLflow keeps in its SQL store
ARTIFACTS_FOLDER = "artifacts"  # each run's artifacts sit in <experiment root>/<run id>/artifacts
_MAX_FLOAT = 1.7976931348623157e308  # SQL holds no infinities: MLflow stores the largest float instead

_meta = MetaData()
_text = ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id", "status", "source_version")
_runs = Table(
    "runs",
    _meta,
    *(Column(n, String) for n in (*_text, "lifecycle_stage", "artifact_uri")),
    *(Column(n, BigInteger) for n in ("start_time", "end_time", "deleted_time")),
    Column("experiment_id", Integer),
)


def _key_value(name: str) -> Table:
    return Table(name, _meta, Column("key", String), Column("value", String), Column("run_uuid", String))


def _metric(name: str) -> Table:
    numbers = (Column("value", Float), Column("timestamp", BigInteger), Column("step", BigInteger))
    return Table(name, _meta, Column("key", String), *numbers, Column("is_nan", Boolean), Column("run_uuid", String))


_tags, _params = _key_value("tags"), _key_value("params")
_metrics, _latest = _metric("metrics"), _metric("latest_metrics")
_metric_columns = ("key", "value", "timestamp", "step", "is_nan", "run_uuid")
_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


@dataclass(frozen=True)
class ChildSpec:
    """One finished child run to write: its name, params, metrics, tags and final status."""

    name: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]
    status: str = "FINISHED"


def _engine(uri: str) -> Engine:
    """One engine per tracking URI in this process; SQLite commits without an fsync (WAL mode keeps the
    database consistent; only a power loss could drop the last runs, and the job store holds every trial)."""
    with _engines_lock:
        if uri not in _engines:
            sqlite = uri.startswith("sqlite:")
            engine = create_engine(uri, connect_args={"timeout": 30} if sqlite else {}, pool_pre_ping=not sqlite)
            if sqlite:
                event.listen(engine, "connect", lambda con, _rec: con.execute("PRAGMA synchronous = NORMAL"))
            _engines[uri] = engine
        return _engines[uri]


def bulk_writer(tracking_uri: str) -> BulkWriter | None:
    """A writer for this tracking URI's SQL store at a known schema revision, else None (a tracking
    server, a file store, or a database another MLflow release migrated: the per-run calls stay)."""
    try:
        if make_url(tracking_uri).get_backend_name() not in DATABASES:
            return None
    except ArgumentError:
        return None
    try:
        with _engine(tracking_uri).connect() as con:
            revision = con.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        log.info("MLflow child runs are written one by one: no schema revision (%s)", type(exc).__name__)
        return None
    if revision not in SCHEMA_REVISIONS:
        log.info("MLflow child runs are written one by one: schema revision %s is not one we write to", revision)
        return None
    return BulkWriter(_engine(tracking_uri))


def _append(root: str, *parts: str) -> str:
    """``root`` (a path or URI) with ``parts`` appended to its path, as ``create_run`` places a run."""
    parsed = urlparse(root)
    if not parsed.scheme or len(parsed.scheme) == 1:  # a plain path (or a Windows drive)
        return posixpath.join(root, *parts)
    return urlunparse(parsed._replace(path=posixpath.join(parsed.path, *parts)))


def _sanitized(value: float) -> tuple[bool, float]:
    """(is_nan, value) as MLflow stores a metric: NaN as 0 with the flag, infinities as the largest float."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, _MAX_FLOAT if value > 0 else -_MAX_FLOAT
    return False, value


class BulkWriter:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def write(
        self, experiment_id: str, artifact_root: str, parent_run_id: str, runs: Sequence[ChildSpec]
    ) -> list[str]:
        """Write ``runs`` as finished children of ``parent_run_id``; their run ids, in order. ``artifact_root``:
        the experiment's artifact location, under which each run gets its folder as ``create_run`` gives it."""
        now = int(time.time() * 1000)
        ids: list[str] = []
        rows: dict[Table, list[dict[str, Any]]] = {t: [] for t in (_runs, _tags, _params, _metrics, _latest)}
        for spec in runs:
            run_id = uuid.uuid4().hex
            ids.append(run_id)
            rows[_runs].append(
                {
                    "run_uuid": run_id,
                    "name": spec.name,
                    "source_type": SourceType.to_string(SourceType.UNKNOWN),
                    "source_name": "",
                    "entry_point_name": "",
                    "user_id": "unknown",
                    "status": spec.status,
                    "source_version": "",
                    "lifecycle_stage": LifecycleStage.ACTIVE,
                    "artifact_uri": _append(artifact_root, run_id, ARTIFACTS_FOLDER),
                    "start_time": now,
                    "end_time": now,
                    "deleted_time": None,
                    "experiment_id": int(experiment_id),
                }
            )
            tags = {**spec.tags, MLFLOW_PARENT_RUN_ID: parent_run_id, MLFLOW_RUN_NAME: spec.name}
            rows[_tags] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
            rows[_params] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in spec.params.items()]
            for key, raw in spec.metrics.items():
                is_nan, value = _sanitized(float(raw))
                row = dict(zip(_metric_columns, (key, value, now, 0, is_nan, run_id), strict=True))
                rows[_metrics].append(row)
                rows[_latest].append(row)
        with self.engine.begin() as con:
            for table, values in rows.items():
                if values:
                    con.execute(table.insert(), values)
        return ids


def run_status(failed: bool) -> str:
    return RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
