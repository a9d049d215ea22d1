"""The store's service operations on SQLite and on a real PostgreSQL: atomic claims, cancel, requeue, users,
and the dispatcher when the cluster refuses a driver."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from prunehive.platform.service.auth import add_user, authenticate, hash_token
from prunehive.platform.service.dispatcher import Dispatcher
from prunehive.platform.store.jobs import JobRecord, JobStore

SPEC = {"kind": "search", "task": "digits-mlp"}


def test_concurrent_claims_never_hand_out_a_job_twice(db_url: str) -> None:
    store = JobStore(db_url)
    ids = {store.create_job("search", f"job-{i}", SPEC) for i in range(24)}
    claimed: list[str] = []
    lock = threading.Lock()

    def replica(n: int) -> None:
        own = JobStore(db_url)  # its own engine and connections, like another server process
        while (job := own.claim_next_job(f"replica-{n}/x")) is not None:
            with lock:
                claimed.append(job.id)
        own.close()

    threads = [threading.Thread(target=replica, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(claimed).most_common(1)[0][1] == 1
    assert set(claimed) == ids
    job = store.get_job(claimed[0])
    assert job.status == "running" and job.attempts == 1 and job.claimed_by is not None
    assert store.claim_next_job("late/x") is None


def test_claims_take_the_oldest_queued_job_first(db_url: str) -> None:
    store = JobStore(db_url)
    first = store.create_job("search", "first", SPEC)
    store.create_job("search", "second", SPEC)
    job = store.claim_next_job("a/1")
    assert job is not None and job.id == first


def test_cancel_queued_running_and_finished_jobs(db_url: str) -> None:
    store = JobStore(db_url)
    queued = store.create_job("search", "q", SPEC)
    assert store.request_cancel(queued) == "cancelled"
    assert store.get_job(queued).status == "cancelled"
    running = store.create_job("search", "r", SPEC)
    assert store.claim_next_job("a/1") is not None
    assert store.request_cancel(running) == "running" and store.cancel_requested(running)
    assert store.finish_if_running(running, "cancelled", "cancelled on request")
    with pytest.raises(ValueError, match="already cancelled"):
        store.request_cancel(running)
    with pytest.raises(KeyError):
        store.request_cancel("0" * 32)


def test_requeue_happens_once_for_one_lost_driver(db_url: str) -> None:
    store = JobStore(db_url)
    job_id = store.create_job("search", "j", SPEC)
    store.claim_next_job("a/1")
    store.set_dispatch(job_id, "driver-1")
    assert not store.requeue(job_id, "driver-0")  # a stale view of the job changes nothing
    assert store.requeue(job_id, "driver-1")
    assert not store.requeue(job_id, "driver-1")
    again = store.claim_next_job("b/2")
    assert again is not None and again.id == job_id and again.attempts == 2 and again.dispatch_id is None


def test_users_tokens_are_stored_hashed(db_url: str) -> None:
    store = JobStore(db_url)
    token = add_user(store, "alice")
    admin = add_user(store, "root", admin=True)
    found = authenticate(store, token)
    assert found is not None and found.name == "alice" and not found.is_admin
    root = authenticate(store, admin)
    assert root is not None and root.is_admin
    assert authenticate(store, token + "x") is None
    with pytest.raises(ValueError, match="name: user 'alice' already exists"):
        add_user(store, "alice")
    with pytest.raises(ValueError, match="name:"):
        add_user(store, "bad name")
    with store.engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM prunehive_users")]
    assert hash_token(token) in stored and token not in stored


class RefusingCluster:
    """A cluster that is not accepting drivers yet (Ray answers 'No available agent to submit job')."""

    name = "refusing"

    def start(self, job: JobRecord) -> str:
        raise RuntimeError("Request failed with status code 500: No available agent to submit job")

    def poll(self, dispatch_id: str) -> str | None:
        return "never started"

    def alive(self, dispatch_id: str) -> bool:
        return False

    def stop(self, dispatch_id: str) -> None: ...

    def logs(self, job: JobRecord) -> str:
        return ""

    def close(self) -> None: ...


def test_a_refused_driver_leaves_the_job_queued_with_its_attempts(db_url: str) -> None:
    store = JobStore(db_url)
    job_id = store.create_job("search", "j", SPEC)
    dispatcher = Dispatcher(store, RefusingCluster(), max_jobs=2)
    for _ in range(5):
        dispatcher.step()
        dispatcher._retry_at = 0.0  # no pause between rounds in the test
    job = store.get_job(job_id)
    assert job.status == "queued" and job.attempts == 0 and not dispatcher.active
