"""A job's driver killed mid-search and resumed, through the CLI as a user runs it: the steps every resume test
shares. The driver runs in its own process on a real local Ray, SQLite job store and MLflow store; SIGKILL
leaves it no chance to write anything, so whatever resume finds is what the driver had already committed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from prunehive.platform.store.jobs import JobStore

CLI = [sys.executable, "-m", "prunehive.platform.cli"]


@dataclass(frozen=True)
class KilledJob:
    """A job whose driver was killed: its store, its id and the environment it ran in (resume reuses it)."""

    store: JobStore
    job_id: str
    env: dict[str, str]

    def resume(self) -> subprocess.CompletedProcess[str]:
        """``prunehive run --resume`` by the id's prefix; asserts it finished."""
        resumed = subprocess.run(
            [*CLI, "run", "--resume", self.job_id[:8], "--json"], env=self.env, capture_output=True, text=True
        )
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        return resumed


def run_then_kill(
    spec: dict[str, Any],
    home: Path,
    paths: Sequence[Path | str],
    ready: Callable[[JobStore, str], bool],
    timeout: float = 300.0,
) -> KilledJob:
    """Run ``spec`` with ``prunehive run`` in ``home`` (``paths`` on PYTHONPATH, for test tasks the driver and
    workers import: a test module used as a task also needs ``tests/``, where this helper lives), SIGKILL the
    driver once ``ready(store, job_id)`` holds, and return the killed job."""
    env = dict(os.environ, PRUNEHIVE_HOME=str(home), PYTHONPATH=os.pathsep.join(str(p) for p in paths))
    env.pop("RAY_ADDRESS", None)
    spec_file = home / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(
        [*CLI, "run", str(spec_file), "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    deadline, job_id = time.monotonic() + timeout, None
    while time.monotonic() < deadline and proc.poll() is None:
        jobs = store.list_jobs()
        if jobs and ready(store, jobs[0].id):
            job_id = jobs[0].id
            break
        time.sleep(0.1)
    if job_id is None:
        proc.kill()
        _, stderr = proc.communicate()
        raise AssertionError(f"the job never reached the point to kill it: {stderr.decode()[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return KilledJob(store, job_id, env)
