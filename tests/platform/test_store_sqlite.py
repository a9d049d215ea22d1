"""The job store's SQLite file: its own migrations beside Optuna's, WAL mode, upgrades that keep old rows,
and several stores, threads and processes writing one file at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from alembic import command
from alembic.config import Config

from prunehive.platform.store.db import MIGRATIONS
from prunehive.platform.store.jobs import JobStore
from prunehive.platform.store.models import VERSION_TABLE


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "jobs.db"  # parent folders do not exist yet


@pytest.fixture
def store(db_path: Path) -> Iterator[JobStore]:
    store = JobStore(sqlite_url(db_path))
    yield store
    store.close()


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_migration_creates_tables_with_own_version_table(store: JobStore, db_path: Path) -> None:
    assert {"jobs", "job_trials", VERSION_TABLE} <= tables(db_path)
    assert "alembic_version" not in tables(db_path)
    with sqlite3.connect(db_path) as conn:
        assert conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0003",)]
        indexes = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"ix_job_trials_job_id", "ix_jobs_created_at"} <= indexes
    JobStore(store.url).close()  # upgrading again is a no-op


@pytest.mark.parametrize("optuna_first", [True, False])
def test_coexists_with_optuna_rdb_storage(tmp_path: Path, optuna_first: bool) -> None:
    url = sqlite_url(tmp_path / "shared.db")
    if optuna_first:
        optuna.storages.RDBStorage(url)
    store = JobStore(url)
    storage = optuna.storages.RDBStorage(url)
    JobStore(url).close()

    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    job_id = store.create_job("search", "j", {"n": 1})
    assert store.record_trial(job_id, 0, state="complete", params={"x": 0.5})

    optuna_tables = {"alembic_version", "studies", "trials"}
    assert optuna_tables | {VERSION_TABLE, "jobs", "job_trials"} <= tables(tmp_path / "shared.db")
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2
    assert store.count_trials(job_id) == 1
    store.close()


def test_wal_mode_and_foreign_keys(store: JobStore, db_path: Path) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with sqlite3.connect(db_path) as conn:  # WAL is a property of the file: every process sees it
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_upgrade_from_0002_keeps_trials_and_adds_outcome(db_path: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlite_url(db_path))
    db_path.parent.mkdir(parents=True)
    command.upgrade(config, "0002")
    with sqlite3.connect(db_path) as conn:
        when = "2026-01-01 00:00:00"
        job = {"id": "a", "kind": "search", "name": "j", "status": "queued", "spec": "{}", "created_at": when}
        trial = {"job_id": "a", "candidate_id": 0, "state": "failed", "params": "{}", "created_at": when}
        for table, row in (("jobs", job), ("job_trials", trial)):
            marks = ", ".join("?" * len(row))
            conn.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", tuple(row.values()))
    store = JobStore(sqlite_url(db_path))
    (trial,) = store.trials("a")
    assert trial.state == "failed" and trial.outcome is None
    store.close()


def test_two_stores_on_one_file_see_each_other(db_path: Path) -> None:
    a, b = JobStore(sqlite_url(db_path)), JobStore(sqlite_url(db_path))
    job_id = a.create_job("federated", "j", {"rounds": 2})
    assert b.get_job(job_id).kind == "federated"
    assert b.record_trial(job_id, 0, state="complete", params={}, strategy_state={"from": "b"})
    assert not a.record_trial(job_id, 0, state="complete", params={})
    assert a.count_trials(job_id) == 1 and a.get_job(job_id).strategy_state == {"from": "b"}
    a.close()
    b.close()


@pytest.mark.parametrize("overlap", [False, True])
def test_concurrent_writers(db_path: Path, overlap: bool) -> None:
    stores = [JobStore(sqlite_url(db_path)) for _ in range(2)]
    job_id = stores[0].create_job("search", "j", {})
    inserted = [0, 0]
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for i in range(50):
                candidate = i if overlap else k * 50 + i
                row = {"candidate_id": candidate, "state": "complete", "params": {"k": k}}
                inserted[k] += stores[k].record_trials(job_id, [row], strategy_state={"writer": k, "i": i})
        except BaseException as exc:  # noqa: B036 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    expected = 50 if overlap else 100
    assert sum(inserted) == expected == stores[1].count_trials(job_id)
    assert [t.candidate_id for t in stores[0].trials(job_id)] == list(range(expected))
    for store in stores:
        store.close()


CHILD = """
import sys
from prunehive.platform.store.jobs import JobStore
store = JobStore(sys.argv[1])
if len(sys.argv) > 2:
    print(sum(store.record_trial(sys.argv[2], i, state="complete", params={}) for i in range(30)))
"""


def test_processes_migrate_and_write_at_once(tmp_path: Path) -> None:
    """Two processes migrate a new file together; two others race on the same 30 trials."""
    fresh = sqlite_url(tmp_path / "fresh.db")
    setup = JobStore(sqlite_url(tmp_path / "race.db"))
    job_id = setup.create_job("search", "race", {})
    children = [subprocess.Popen([sys.executable, "-c", CHILD, fresh]) for _ in range(2)]
    children += [
        subprocess.Popen([sys.executable, "-c", CHILD, setup.url, job_id], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=60)[0] for child in children]
    assert [child.returncode for child in children] == [0] * 4
    assert sum(int(out) for out in outputs[2:]) == 30 == setup.count_trials(job_id)
    assert {"jobs", "job_trials", VERSION_TABLE} <= tables(tmp_path / "fresh.db")
    setup.close()
