"""Where a driver meets Ray: connecting (a local Ray sized to this machine, or a cluster), and
placing the evaluation workers with a clear word instead of a silent hang.

Placement rules, documented in the README ("Operating the service"):
- a worker that no node could ever hold fails at once (``PlacementError``, exit 2) on a cluster
  that cannot grow: a local Ray, or a cluster without an autoscaler;
- ``workers`` beyond what such a cluster holds in total run as fewer workers, and the driver says so;
- otherwise (resources held by other jobs, or nodes still to come) the driver waits, saying what
  is missing every few seconds, up to ``resources.placement_timeout``, then fails with that line.

A worker counts as placed once its slot, a placement group of its own, is reserved (``Slots``):
Ray's public readiness check, which needs no dashboard (a local Ray runs without one).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.experimental.internal_kv import _internal_kv_get
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from prunehive.workers.tasks.spec import task_directories

FIRST_NOTE_SECONDS = 3.0  # the first "waiting for resources" line comes this soon (the issue asks for < 10 s)
NOTE_EVERY_SECONDS = 15.0
CAN_GROW_ENV = "PRUNEHIVE_CLUSTER_CAN_GROW"  # "1" / "0": overrides the autoscaler detection


class PlacementError(ValueError):
    """Workers that cannot be placed; a ValueError, so the CLI prints one line and exits 2."""


def say(line: str) -> None:
    """Placement notes go to stderr: the terminal of ``prunehive run``, the job log in the service."""
    print(line, file=sys.stderr, flush=True)


def connect_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Attach to ``address`` / RAY_ADDRESS, or start a local Ray of ``num_cpus`` (default: this machine's CPUs).

    The local Ray is never inflated to what a spec asks for: placement then reports honestly what fits.
    A SIGTERM handler the process set
    (``prunehive run`` turns SIGTERM into a cancel) survives ``ray.init``, which installs its own.
    """
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray 2.55's FutureWarning otherwise
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if main else None
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        if task_directories():
            say(cluster_import_note(address, task_directories()))
    else:
        ray.init(  # "local": a new instance even where `ray start` left a cluster that ray.init would join
            address="local",
            num_cpus=num_cpus or os.cpu_count() or 1,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
            runtime_env=local_runtime_env(task_directories()),
        )
    if main and callable(handler):
        signal.signal(signal.SIGTERM, handler)


def local_runtime_env(directories: Sequence[str]) -> dict[str, Any] | None:
    """The job's runtime_env on a local Ray: the spec directories of user ``module:factory`` tasks ahead of
    the inherited PYTHONPATH, so workers import the module wherever ``prunehive run`` was started. (Ray
    itself adds only the driver's current directory.) None without such a task: no runtime_env at all."""
    if not directories:
        return None
    inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    return {"env_vars": {"PYTHONPATH": os.pathsep.join([*directories, *inherited])}}


def cluster_import_note(address: str, directories: Sequence[str]) -> str:
    """What a user must do for a connected cluster, whose workers import task modules from their own nodes."""
    return (
        f"note: the Ray cluster at {address} imports your task module on its own nodes: make "
        f"{os.pathsep.join(directories)} importable there (same path on every node, or install the module, "
        "or PYTHONPATH in the nodes' environment)"
    )


@dataclass(frozen=True)
class Demand:
    """What one worker (an evaluation actor, a Flower client) asks of a node."""

    cpus: float
    gpus: float = 0.0

    @classmethod
    def of(cls, resources: Any) -> Demand:
        """From a spec's ``resources`` section."""
        return cls(float(resources.cpus_per_worker), float(resources.gpus_per_worker))

    def text(self) -> str:
        return f"{self.cpus:g} CPU{'s' if self.cpus != 1 else ''}" + (f", {self.gpus:g} GPU" if self.gpus else "")


@dataclass(frozen=True)
class Cluster:
    """The cluster's nodes (total resources of each alive node) and whether it can add nodes."""

    nodes: tuple[dict[str, float], ...]
    can_grow: bool

    @property
    def cpus(self) -> float:
        return sum(n.get("CPU", 0.0) for n in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(n.get("GPU", 0.0) for n in self.nodes)

    def fits(self, demand: Demand) -> int:
        """How many such workers the whole cluster holds when idle (a worker never spans nodes)."""
        total = 0
        for node in self.nodes:
            by_cpu = math.floor(node.get("CPU", 0.0) / demand.cpus + 1e-9) if demand.cpus > 0 else 10**6
            by_gpu = math.floor(node.get("GPU", 0.0) / demand.gpus + 1e-9) if demand.gpus > 0 else 10**6
            total += min(by_cpu, by_gpu)
        return total

    def text(self) -> str:
        grow = "" if self.can_grow else "; it cannot grow"
        return f"cluster: {self.cpus:g} CPUs, {self.gpus:g} GPUs{grow}"


def cluster() -> Cluster:
    """The connected cluster as it is now."""
    nodes = tuple(
        {k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive") and n.get("Resources")
    )
    return Cluster(nodes, _can_grow())


def _can_grow() -> bool:
    """Whether an autoscaler may add nodes: Ray's monitor on a cluster without one reports every node as
    its own read-only type (``node_<id>``); a real autoscaler names its node types (or runs as v2).

    Ray has no public call that says whether an autoscaler manages the cluster: ``ray.autoscaler.sdk``
    only sends requests, and ``ray status`` reads these same two keys of the GCS key-value store. So
    they are read here, through Ray's own accessor; any failure to read them means "cannot grow", and
    ``PRUNEHIVE_CLUSTER_CAN_GROW`` decides instead where it is set."""
    forced = os.environ.get(CAN_GROW_ENV)
    if forced in ("0", "1"):
        return forced == "1"

    try:
        if (_internal_kv_get("__autoscaler_v2_enabled") or b"") == b"1":
            return True
        status = json.loads(_internal_kv_get("__autoscaling_status") or b"{}")
    except (ValueError, RuntimeError, ConnectionError):
        return False
    mapping = (status.get("autoscaler_report") or {}).get("node_type_mapping") or {}
    return any(kind != f"node_{node}" for node, kind in mapping.items())


def require(demand: Demand, asked: int = 1, note: Callable[[str], None] = say) -> int:
    """How many of ``asked`` workers to start: all on a cluster that can grow or holds them; on one
    that cannot, as many as it holds (said), and a ``PlacementError`` when it holds none."""
    now = cluster()
    fits = now.fits(demand)
    if fits >= asked or now.can_grow:
        return asked
    if fits == 0:
        raise PlacementError(
            f"resources: a worker needs {demand.text()}, which no node has ({now.text()}); "
            "lower resources.cpus_per_worker / gpus_per_worker"
        )
    note(f"resources.workers: {asked} asked, {fits} fit ({now.text()}): running on {fits}")
    return fits


class Slots:
    """One placement group of one bundle per worker: Ray's public word on whether a worker's resources
    are reserved. A worker created into its slot is then placed, however long it takes to build its
    task; a replacement goes into the same slot, which its dead predecessor freed. ``release`` gives
    the reservations back (a driver's groups also end with its Ray job)."""

    def __init__(self, demand: Demand, count: int) -> None:
        bundle = {"CPU": demand.cpus, **({"GPU": demand.gpus} if demand.gpus else {})}
        self.groups = [placement_group([bundle]) for _ in range(count)]

    def options(self, index: int) -> dict[str, Any]:
        """Actor options that put a worker into slot ``index``."""
        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(self.groups[index], 0)}

    def placed(self) -> int:
        return sum(bool(group.wait(timeout_seconds=0)) for group in self.groups)

    def release(self) -> None:
        for group in self.groups:
            with contextlib.suppress(Exception):  # already gone with its job, or Ray is shutting down
                remove_placement_group(group)
        self.groups = []


def wait_placed(slots: Slots, demand: Demand, timeout: float, note: Callable[[str], None] = say) -> None:
    """Wait until every slot is reserved. Says what is missing after ``FIRST_NOTE_SECONDS`` and every
    ``NOTE_EVERY_SECONDS``; raises ``PlacementError`` with that line once ``timeout`` seconds pass."""
    start = time.monotonic()
    next_note = start + FIRST_NOTE_SECONDS
    while (placed := slots.placed()) < len(slots.groups):
        now = time.monotonic()
        if now >= next_note or now - start >= timeout:
            line = f"waiting for resources: {placed} of {len(slots.groups)} workers placed ({cluster().text()}; "
            line += f"each worker needs {demand.text()})"
            if now - start >= timeout:
                raise PlacementError(f"{line}; gave up after resources.placement_timeout = {timeout:g} s")
            note(line)
            next_note = now + NOTE_EVERY_SECONDS
        time.sleep(0.5)
