"""A bounded load test on loopback: users submit tiny jobs at once to a real ``prunehive server``
(local Ray head, SQLite store); every job is accepted, at most ``--max-jobs`` run at a time, and
all finish. Prints the figures as one JSON line (``PRUNEHIVE_LOAD_REPORT=path`` also writes them).

The default case is 4 jobs from 4 users, two of them queued behind ``--max-jobs 2`` (bounded for CI); the
acceptance figure (50 jobs from 5 users) is the ``slow`` case:
``.venv/bin/pytest tests/service/test_load.py -m slow -s``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from topology import Processes, bin_path, free_port, http_ok, wait_for

pytestmark = pytest.mark.ray
TINY = json.dumps(
    {
        "kind": "search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.8},
        "search": {"strategy": "random", "budget": 2, "seed": 0, "baselines": ["uniform"]},
        "resources": {"workers": 1, "batch": 1},
    }
)


def run_load(tmp_path: Path, users: int, per_user: int, max_jobs: int) -> dict[str, Any]:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    env = {"PATH": f"{bin_path('')}:/usr/bin:/bin", "HOME": str(tmp_path), "PRUNEHIVE_HOME": str(tmp_path / "home")}
    env |= {"PRUNEHIVE_CACHE": os.environ.get("PRUNEHIVE_CACHE", str(tmp_path / "cache"))}
    env |= {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0", "PRUNEHIVE_DATABASE_URL": db}

    def add(name: str, *flags: str) -> str:
        cmd = [bin_path("prunehive"), "users", "add", name, "--json", *flags]
        return str(json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout)["token"])

    tokens = [add(f"user{i}") for i in range(users)]
    admin = add("ops", "--admin")
    procs, port = Processes(tmp_path, env), free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        args = ["server", "--port", str(port), "--max-jobs", str(max_jobs), "--num-cpus", str(max_jobs)]
        procs.start("server", [bin_path("prunehive"), *args])
        wait_for(lambda: http_ok(f"{url}/healthz"), "prunehive server", 180)
        latencies: list[float] = []
        codes: list[int] = []
        lock = threading.Lock()

        def user(token: str) -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
                for _ in range(per_user):
                    start = time.perf_counter()
                    code = http.post("/jobs", content=TINY, headers={"Content-Type": "application/json"}).status_code
                    with lock:
                        latencies.append(time.perf_counter() - start)
                        codes.append(code)

        began = time.perf_counter()
        threads = [threading.Thread(target=user, args=(t,)) for t in tokens]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submitted = time.perf_counter() - began
        ops = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        most_running, total = 0, users * per_user
        deadline = time.monotonic() + 60 * total
        while True:
            jobs = ops.get("/jobs", params={"limit": 1000}).json()["jobs"]
            most_running = max(most_running, sum(j["status"] == "running" for j in jobs))
            if all(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs):
                break
            assert time.monotonic() < deadline, "the jobs did not finish"
            time.sleep(0.5)
        wall = time.perf_counter() - began
        peak = ops.get("/healthz").json()["dispatcher"]["peak"]
        cli = {**env, "PRUNEHIVE_SERVER": url, "PRUNEHIVE_TOKEN": admin}
        prunehive = bin_path("prunehive")
        listed = subprocess.run([prunehive, "jobs", "--json", "--limit", "1000"], env=cli, capture_output=True)
        assert len(json.loads(listed.stdout)["jobs"]) == total
        late = subprocess.run([prunehive, "cancel", jobs[0]["job_id"]], env=cli, capture_output=True, text=True)
        assert late.returncode == 2 and "409" in late.stderr and "already succeeded" in late.stderr
    finally:
        procs.stop_all()
    spans = [
        (datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(j["started_at"])).total_seconds()
        for j in jobs
    ]
    ordered = sorted(latencies)
    return {
        "users": users,
        "jobs": total,
        "max_jobs": max_jobs,
        "accepted": codes.count(201),
        "succeeded": sum(j["status"] == "succeeded" for j in jobs),
        "owners": len({j["owner"] for j in jobs}),
        "submit_seconds_all": round(submitted, 3),
        "submit_latency_p50_ms": round(1000 * statistics.median(ordered), 1),
        "submit_latency_p95_ms": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 1),
        "most_running_seen": most_running,
        "dispatcher_peak": peak,
        "job_seconds_mean": round(statistics.mean(spans), 2),
        "wall_seconds": round(wall, 1),
        "jobs_per_minute": round(60 * total / wall, 1),
        "cpus": os.cpu_count(),
    }


def check(report: dict[str, Any]) -> None:
    print(json.dumps(report))
    if os.environ.get("PRUNEHIVE_LOAD_REPORT"):
        Path(os.environ["PRUNEHIVE_LOAD_REPORT"]).write_text(json.dumps(report, indent=2) + "\n")
    assert report["accepted"] == report["jobs"] == report["succeeded"]
    assert report["owners"] == report["users"]
    assert report["most_running_seen"] <= report["max_jobs"] and report["dispatcher_peak"] <= report["max_jobs"]
    assert report["dispatcher_peak"] == report["max_jobs"]  # the limit was reached, so it was what held


def test_load_4_jobs_from_4_users(tmp_path: Path) -> None:
    check(run_load(tmp_path, users=4, per_user=1, max_jobs=2))


@pytest.mark.slow
def test_load_50_jobs_from_5_users(tmp_path: Path) -> None:
    check(run_load(tmp_path, users=5, per_user=10, max_jobs=4))
