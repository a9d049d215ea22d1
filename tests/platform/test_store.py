"""The job store's API: job rows and their lifecycle, exactly-once trials, the told history read back in
order, a checkpoint that lands with its trials or not at all, and one-line store errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from prunehive.platform.store.jobs import JobStore, StoreError
from prunehive.platform.store.models import Job
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
