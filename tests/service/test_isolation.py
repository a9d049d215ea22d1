"""Jobs of every kind at once through one real ``prunehive server`` (HTTP, local Ray head, SQLite):
a search, a search on a ``task: {hf: ...}`` mapping (a tiny Llama), a metric-search and a federated
job all succeed, a second federated job is cancelled and
ends ``cancelled`` within seconds, and ``/healthz`` answers throughout and afterwards.

Before each driver ran in its own process, Flower's ``ray.shutdown()`` at the end of a simulation
took the server's Ray, and with it the server and every other job, down.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hf_models import causal_lm
from topology import Processes, bin_path, free_port, http_ok, wait_for

pytestmark = pytest.mark.ray
TERMINAL = ("succeeded", "failed", "cancelled")
SEARCH = {"strategy": "random", "budget": 4, "seed": 0, "baselines": ["uniform"]}
SPECS: dict[str, dict[str, Any]] = {
    "search": {"kind": "search", "search": SEARCH, "resources": {"workers": 1, "batch": 1}},
    "metric-search": {
        "kind": "metric-search",
        "search": {"budget": 4, "seed": 0, "baselines": ["magnitude"], "options": {"population": 4}},
        "resources": {"workers": 1, "batch": 1},
    },
    "federated": {
        "kind": "federated",
        "federated": {"clients": 2, "rounds": 2, "local_epochs": 1, "seed": 0},
        "pruning": {"sparsity": 0.5, "plan": "fixed"},
        "resources": {"workers": 1, "cpus_per_worker": 2},
    },
}


class HealthWatch(threading.Thread):
    """Asks ``/healthz`` every half second; keeps every failed answer."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.asked, self.failures = url, 0, []  # type: ignore[var-annotated]
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self.done.is_set():
                try:
                    reply = http.get(f"{self.url}/healthz")
                    if reply.status_code != 200 or reply.json()["status"] != "ok":
                        self.failures.append(f"{reply.status_code}: {reply.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                self.asked += 1
                self.done.wait(0.5)


@pytest.mark.slow  # ~100 s: each kind runs through the service in its own tests; this runs them all at once
def test_every_kind_at_once_through_one_server(tmp_path: Path) -> None:
    env = {
        "PATH": f"{bin_path('')}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PRUNEHIVE_HOME": str(tmp_path / "home"),
        "PRUNEHIVE_CACHE": os.environ.get("PRUNEHIVE_CACHE", str(tmp_path / "cache")),
        "PRUNEHIVE_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }
    add = [bin_path("prunehive"), "users", "add", "alice", "--json"]
    token = json.loads(subprocess.run(add, env=env, check=True, capture_output=True, text=True).stdout)["token"]
    procs, port = Processes(tmp_path, env), free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        args = ["server", "--port", str(port), "--max-jobs", "4", "--num-cpus", "4"]
        (tmp_path / "llama").mkdir()
        args += ["--data-root", str(tmp_path / "llama")]  # the hf: search reads its model and data there
        server = procs.start("server", [bin_path("prunehive"), *args])
        wait_for(lambda: http_ok(f"{url}/healthz"), "prunehive server", 180)
        health = HealthWatch(url)
        health.start()
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

        def submit(spec: dict[str, Any]) -> str:
            reply = api.post("/jobs", content=json.dumps(spec), headers={"Content-Type": "application/json"})
            assert reply.status_code == 201, reply.text
            return str(reply.json()["job_id"])

        def job(job_id: str) -> dict[str, Any]:
            return dict(api.get(f"/jobs/{job_id}").json())

        directory, data = causal_lm(tmp_path / "llama", "llama")
        small = {"calibration": 1024, "validation": 512, "test": 512}
        task = {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": small}
        specs = {**SPECS, "hf-search": {**SPECS["search"], "task": task}}
        ids = {kind: submit(spec) for kind, spec in specs.items()}
        doomed = submit({**SPECS["federated"], "name": "to-cancel"})
        wait_for(lambda: job(doomed)["status"] == "running", "the federated job to cancel running", 120, every=0.2)
        time.sleep(3)  # let its driver get going (importing, connecting, starting the simulation)
        asked = time.monotonic()
        assert api.post(f"/jobs/{doomed}/cancel").json()["status"] == "running"
        wait_for(lambda: job(doomed)["status"] in TERMINAL, "the cancelled federated job", 60, every=0.2)
        took = time.monotonic() - asked
        assert job(doomed)["status"] == "cancelled", job(doomed)["error"]
        assert took < 15, f"cancel took {took:.1f} s"

        wait_for(lambda: all(job(j)["status"] in TERMINAL for j in ids.values()), "the four jobs", 900, every=2)
        for kind, job_id in ids.items():
            final = job(job_id)
            log = api.get(f"/jobs/{job_id}/logs").text
            assert final["status"] == "succeeded", (kind, final["error"], log[-3000:])
        time.sleep(3)  # the drivers' Ray connections close after their jobs; the server stays
        assert server.poll() is None, procs.log("server")[-3000:]
        assert http_ok(f"{url}/healthz")
        health.done.set()
        health.join(timeout=15)
        assert health.asked > 10 and health.failures == [], health.failures[:5]
    finally:
        procs.stop_all()
