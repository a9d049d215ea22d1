"""The deployable topology, started for real without Docker: PostgreSQL, ``mlflow server``, a Ray
head with its dashboard, a second Ray node, and ``prunehive server`` dispatching through Ray's
Jobs API. Every process gets its own session, so a node dies with all its workers and teardown
leaves nothing behind. Used by the topology and load tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
PG_USER = "postgres"


@dataclass
class PostgresServer:
    port: int

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL (psycopg 3 driver)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bin_path(name: str) -> str:
    return str(BIN / name)


class Processes:
    """Started processes, each its own process group; stopped in reverse order."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env={**self.env, **(extra_env or {})}, start_new_session=True
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str, sig: int = signal.SIGKILL, wait: float = 20.0) -> None:
        proc = self.procs.pop(name)
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, s)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                deadline = time.monotonic() + wait  # the group's other members (raylet, workers) too
                while _group_alive(proc.pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if not _group_alive(proc.pid):
                    break
            except subprocess.TimeoutExpired:
                continue

    def stop_all(self) -> None:
        """prunehive servers get SIGTERM (a clean shutdown); the rest is killed, its whole group at once."""
        for name in reversed(list(self.procs)):
            graceful = name in ("prunehive", "server")
            self.kill(name, signal.SIGTERM if graceful else signal.SIGKILL, wait=10.0)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _not_yet() -> tuple[type[BaseException], ...]:
    """Errors that mean "the service is not answering yet": refused or dropped connections, time-outs,
    and the Ray state API's own error for a dashboard that refused or failed the request."""
    from ray.util.state.exception import RayStateApiException

    return (httpx.HTTPError, OSError, RayStateApiException)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 120.0, every: float = 0.5) -> None:
    """Poll ``check`` until it is true; a connection error counts as "not yet", the last one is reported."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except _not_yet() as exc:
            last = f"; last error: {type(exc).__name__}: {str(exc)[:200]}"
        time.sleep(every)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s{last}")


def http_ok(url: str) -> bool:
    return httpx.get(url, timeout=5).status_code == 200


def ray_head_args(gcs: int, dashboard: int, cpus: int, temp_dir: Path) -> list[str]:
    ports = [free_port() for _ in range(5)]
    return [
        bin_path("ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--num-cpus", str(cpus),
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--dashboard-agent-listen-port", str(ports[0]), "--dashboard-agent-grpc-port", str(ports[1]),
        "--ray-client-server-port", str(ports[2]), "--metrics-export-port", str(ports[3]),
        "--runtime-env-agent-port", str(ports[4]), "--temp-dir", str(temp_dir),
    ]  # fmt: skip


def start_ray_head(procs: Processes, cpus: int, temp_dir: Path, tries: int = 2) -> tuple[int, int]:
    """Start a Ray head and wait for its dashboard; returns (GCS port, dashboard port).

    A head that dies or never serves its dashboard (a port taken between choosing and binding it, a
    slow start on a loaded machine) is killed and started once more on fresh ports; the last failure
    quotes the head's own log."""
    for attempt in range(1, tries + 1):
        gcs, dashboard = free_port(), free_port()
        proc = procs.start("ray-head", ray_head_args(gcs, dashboard, cpus, temp_dir))
        try:
            wait_for(_serving(proc, f"http://127.0.0.1:{dashboard}/api/version"), "Ray dashboard", 150)
            return gcs, dashboard
        except (TimeoutError, RuntimeError) as exc:
            tail = procs.log("ray-head")[-1500:]
            procs.kill("ray-head")
            if attempt == tries:
                raise TimeoutError(f"{exc}; the head's log ends:\n{tail}") from None
    raise AssertionError("unreachable")


def _serving(proc: subprocess.Popen[bytes], url: str) -> Callable[[], bool]:
    """A readiness check that fails at once when the process has exited."""

    def check() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the process exited with code {proc.returncode}")
        return http_ok(url)

    return check


def ray_worker_args(gcs: int, cpus: int) -> list[str]:
    ports = [free_port() for _ in range(4)]
    return [
        bin_path("ray"), "start", "--address", f"127.0.0.1:{gcs}", "--block", "--disable-usage-stats",
        "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
        "--dashboard-agent-listen-port", str(ports[0]), "--dashboard-agent-grpc-port", str(ports[1]),
        "--metrics-export-port", str(ports[2]), "--runtime-env-agent-port", str(ports[3]),
    ]  # fmt: skip


# A dead node is noticed in ~3 s instead of ~30 s; actors spread over nodes instead of packing the head.
RAY_ENV = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_scheduler_spread_threshold": "0.0",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
}
