"""The job store on SQLite: migrations beside Optuna, exactly-once trials, atomic checkpoints."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from prunehive.platform.store.db import MIGRATIONS
from prunehive.platform.store.jobs import JobStore, StoreError
from prunehive.platform.store.models import VERSION_TABLE, Job
from prunehive.search.strategy import Candidate, Outcome


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


def test_job_lifecycle(store: JobStore) -> None:
    job_id = store.create_job("search", "first", {"task": "mnist"}, owner="ana")
    job = store.get_job(job_id)
    assert len(job_id) == 32 and job.status == "queued" and job.spec == {"task": "mnist"}
    assert job.created_at.tzinfo == UTC and job.started_at is None and job.strategy_state is None

    store.set_status(job_id, "running")
    store.heartbeat(job_id)
    store.set_mlflow_run(job_id, "run-1")
    store.save_state(job_id, {"generation": 3})
    running = store.get_job(job_id)
    assert running.started_at is not None and running.started_at.tzinfo == UTC
    assert running.heartbeat_at is not None and running.finished_at is None
    assert running.mlflow_run_id == "run-1" and running.strategy_state == {"generation": 3}

    store.set_summary(job_id, {"best": 0.9})
    store.set_status(job_id, "failed", error="boom")
    done = store.get_job(job_id)
    assert done.status == "failed" and done.error == "boom" and done.summary == {"best": 0.9}
    assert done.finished_at is not None and done.finished_at >= running.started_at
    store.set_status(job_id, "running")  # resumed: keeps the first start, clears the end and error
    resumed = store.get_job(job_id)
    assert resumed.started_at == running.started_at and resumed.finished_at is None and resumed.error is None

    other = store.create_job("benchmark", "second", {}, owner="bo")
    assert [j.id for j in store.list_jobs()] == [other, job_id]
    assert [j.id for j in store.list_jobs(owner="ana")] == [job_id]
    assert [j.id for j in store.list_jobs(status="queued")] == [other]
    assert len(store.list_jobs(limit=1)) == 1

    with pytest.raises(ValueError, match="job status"):
        store.set_status(job_id, "exploded")
    with pytest.raises(ValueError, match="job kind"):
        store.create_job("magic", "x", {})
    with pytest.raises(KeyError, match="no job"):
        store.set_status("0" * 32, "running")
    with pytest.raises(KeyError, match="no job"):
        store.heartbeat("0" * 32)


def test_get_job_by_unique_prefix(store: JobStore) -> None:
    with store.session() as s:
        for job_id in ("abcdef01" + "0" * 24, "abcdef02" + "0" * 24, "123456ff" + "0" * 24):
            s.add(Job(id=job_id, kind="search", name=job_id, status="queued", spec={}))
    assert store.get_job("123456").name == "123456ff" + "0" * 24
    assert store.get_job("ABCDEF01").id.startswith("abcdef01")
    with pytest.raises(KeyError, match=r"job id prefix 'abcdef' matches 2 jobs; give more characters"):
        store.get_job("abcdef")
    assert store.get_job("1").id.startswith("123456ff")  # any length, when unique
    with pytest.raises(KeyError, match="no job"):
        store.get_job("fedcba")
    with pytest.raises(KeyError, match="no job"):
        store.get_job("abcdef%")  # not hex: never reaches LIKE


def test_record_trial_is_exactly_once(store: JobStore) -> None:
    job_id = store.create_job("search", "j", {})
    assert store.record_trial(
        job_id,
        7,
        state="complete",
        params={"a": 0.5},
        result={"acc": 0.9},
        worker="w1",
        seconds=1.5,
        strategy_state={"step": 1},
    )
    assert not store.record_trial(job_id, 7, state="failed", params={"a": 0.1}, error="x", strategy_state={"step": 2})
    assert store.count_trials(job_id) == 1
    assert store.get_job(job_id).strategy_state == {"step": 1}  # the duplicate changed nothing
    (trial,) = store.trials(job_id)
    assert (trial.candidate_id, trial.state, trial.params, trial.result) == (7, "complete", {"a": 0.5}, {"acc": 0.9})
    assert trial.worker == "w1" and trial.seconds == 1.5 and trial.created_at.tzinfo == UTC

    with pytest.raises(KeyError, match="no job"):
        store.record_trial("0" * 32, 0, state="complete", params={})
    with pytest.raises(ValueError, match="trial state"):
        store.record_trial(job_id, 8, state="pruned", params={})


def test_record_trials_batch(store: JobStore) -> None:
    job_id = store.create_job("search", "j", {})
    store.record_trial(job_id, 1, state="complete", params={"c": 1})
    rows = [{"candidate_id": c, "state": "complete", "params": {"c": c}, "result": {"v": c}} for c in (0, 1, 2, 2, 3)]
    assert store.record_trials(job_id, rows, {"step": 3}) == 3  # 1 already there, 2 given twice
    assert [t.candidate_id for t in store.trials(job_id)] == [0, 1, 2, 3]
    assert store.get_job(job_id).strategy_state == {"step": 3}
    assert store.record_trials(job_id, rows, {"step": 4}) == 0
    assert store.get_job(job_id).strategy_state == {"step": 3}
    assert store.record_trials(job_id, []) == 0
    with pytest.raises(ValueError, match="trial row"):
        store.record_trials(job_id, [{"candidate_id": 9, "state": "complete"}])


def test_history_is_read_back_in_the_order_told(store: JobStore) -> None:
    job_id = store.create_job("search", "j", {})

    def row(cid: int, values: list[float] | None) -> dict[str, Any]:
        cand = Candidate(cid, [0.5, 0.25], meta={"origin": "test"})
        state = "failed" if values is None else "complete"
        return {"candidate_id": cid, "state": state, "params": cand.to_dict(), "outcome": values}

    store.record_trials(job_id, [row(2, [0.5, 0.1]), row(0, None)], {"told": 2})
    store.record_trials(job_id, [row(3, [-1.0, 0.2]), row(1, [0.75, 0.3])], {"told": 4})
    told = store.history(job_id)
    assert [c.id for c, _ in told] == [2, 0, 3, 1]  # not candidate order: the order they were told
    assert told[0] == (Candidate(2, [0.5, 0.25], meta={"origin": "test"}), Outcome((0.5, 0.1)))
    assert told[1][1] == Outcome.failed()
    assert [t.outcome for t in store.trials(job_id)] == [None, [0.75, 0.3], [0.5, 0.1], [-1.0, 0.2]]
    store.record_trial(job_id, 4, state="complete", params=Candidate(4, [0.5, 0.25]).to_dict())
    with pytest.raises(ValueError, match="trial 4 of job .* has no outcome values"):
        store.history(job_id)


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


def test_state_and_trial_share_one_transaction(store: JobStore) -> None:
    job_id = store.create_job("search", "j", {})
    store.save_state(job_id, {"step": 0})
    with pytest.raises(StoreError, match="not JSON serializable"):
        store.record_trial(job_id, 0, state="complete", params={"a": 1}, strategy_state={"bad": {1, 2}})
    with pytest.raises(StoreError):
        store.record_trial(job_id, 1, state="complete", params={"bad": object()}, strategy_state={"step": 1})
    assert store.count_trials(job_id) == 0
    assert store.get_job(job_id).strategy_state == {"step": 0}


def test_session_rolls_back_on_any_error(store: JobStore) -> None:
    with pytest.raises(RuntimeError, match="oops"), store.session() as s:
        s.add(Job(id="f" * 32, kind="search", name="x", status="queued", spec={}))
        s.flush()
        raise RuntimeError("oops")
    with pytest.raises(KeyError):
        store.get_job("f" * 32)


def test_store_error_is_one_line(store: JobStore) -> None:
    with pytest.raises(StoreError) as info, store.session() as s:
        s.execute(sa.text("INSERT INTO jobs (id) VALUES ('x')"))
    message = str(info.value)
    assert "\n" not in message and "IntegrityError" in message and "NOT NULL" in message
    assert isinstance(info.value.__cause__, sa.exc.IntegrityError)


def test_mlflow_run_bookkeeping(store: JobStore) -> None:
    job_id = store.create_job("search", "j", {})
    rows = [{"candidate_id": c, "state": "complete", "params": {}} for c in range(3)]
    store.record_trials(job_id, rows)
    first = store.trials(job_id)[0]
    assert store.set_trial_mlflow_run({first.id: "r0"}) == 1
    assert store.set_trial_mlflow_run({(job_id, 1): "r1", (job_id, 99): "nope"}) == 1
    assert [t.candidate_id for t in store.trials_missing_mlflow(job_id)] == [2]
    assert [t.mlflow_run_id for t in store.trials(job_id)] == ["r0", "r1", None]


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
