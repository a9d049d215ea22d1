"""``throughput``: real search jobs through :class:`SearchRun` (random strategy, temporary job store and
MLflow store) with 1 and 2 workers, against the same candidates evaluated in a bare loop in a Ray actor:
trials per second, the 2-worker speedup (goal >= 1.8x), the runner's overhead (goal <= 10%), the
platform's fixed cost per trial in milliseconds (Ray calls, job store, MLflow; goal <= 5 ms), and the
phases of a job around its search (start-up, finish).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray

from prunehive.bench.timing import GOALS, torch_threads
from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.cluster import connect_ray
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.jobs.search.setup import build_space, build_strategy
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.search.strategy import Candidate
from prunehive.workers.actor import EvalWorker
from prunehive.workers.contracts import EvalRequest

THROUGHPUT_TASKS = ("code-lm", "digits-mlp")
THROUGHPUT_BUDGETS = {"code-lm": 24, "digits-mlp": 120}
FIXED_COST_GOAL_MS = 5.0  # per trial, on digits-mlp (MLflow child runs are written in bulk: tracking/bulk_runs.py)
PHASES = ("startup_seconds", "finish_seconds", "other_seconds")  # a job's time outside its search phase


@contextlib.contextmanager
def _temporary_home() -> Iterator[Path]:
    """A throw-away PRUNEHIVE_HOME holding the job store and the MLflow store."""
    with tempfile.TemporaryDirectory(prefix="prunehive-bench-") as tmp:
        saved = {k: os.environ.get(k) for k in ("PRUNEHIVE_HOME", "MLFLOW_TRACKING_URI", "PRUNEHIVE_DATABASE_URL")}
        os.environ["PRUNEHIVE_HOME"] = tmp
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ["PRUNEHIVE_DATABASE_URL"] = f"sqlite:///{Path(tmp) / 'prunehive.db'}"
        try:
            yield Path(tmp)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _job_spec(task: str, workers: int, budget: int, sparsity: float, seed: int, home: Path) -> dict[str, Any]:
    return {
        "kind": "search",
        "name": f"bench-{task}-{workers}w",
        "task": task,
        "seed": seed,
        "pruning": {"sparsity": sparsity},
        "search": {"strategy": "random", "budget": budget, "seed": seed, "baselines": ["uniform"]},
        "resources": {"workers": workers, "cpus_per_worker": 1},
        "tracking": {"mlflow_uri": f"sqlite:///{home / 'mlflow.db'}", "experiment": f"bench-{task}"},
    }


def _run_job(task: str, workers: int, budget: int, sparsity: float, seed: int, home: Path) -> dict[str, Any]:
    """One real search job; returns its timing and the candidate vectors it evaluated."""
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    try:
        job_id = start_job(store, parse_spec(_job_spec(task, workers, budget, sparsity, seed, home)))
        start = time.perf_counter()
        result = SearchRun(store, job_id, show_progress=False).run()
        total = time.perf_counter() - start
        trials = store.trials(job_id)
        vectors = [Candidate.from_dict(t.params).sparsity for t in trials]
        failed = sum(1 for t in trials if t.state != "complete")
    finally:
        store.close()
    timing = result["timing"]
    return {
        "workers": workers,
        "trials": len(vectors),
        "failed": failed,
        "search_seconds": timing["search_seconds"],
        "startup_seconds": timing["startup_seconds"],
        "finish_seconds": timing["finish_seconds"],
        "total_seconds": total,
        # Outside the three phases: the driver's own set-up (job row, MLflow experiment; a new MLflow
        # database runs its migrations here, once).
        "other_seconds": total - timing["startup_seconds"] - timing["search_seconds"] - timing["finish_seconds"],
        "trials_per_second": len(vectors) / timing["search_seconds"],
        "vectors": vectors,
    }


class _BareLoop:
    """One EvalWorker (1 torch thread, like an actor) evaluating candidates in turn, with no runner around it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        job = parse_spec(spec)
        with torch_threads(None):  # EvalWorker sets the thread count; put it back afterwards
            self.worker = EvalWorker(job.task, seed=job.seed, threads=1)
        # The candidates a job of this spec evaluates: the same strategy, space and seed as the runner's.
        space = build_space(job, self.worker.describe().layers)
        strategy = build_strategy(job, space, "bench", "sqlite://")
        self.vectors = [list(c.sparsity) for c in strategy.ask(job.search.budget)]

    def run(self) -> float:
        with torch_threads(1):
            start = time.perf_counter()
            for i, vector in enumerate(self.vectors):
                reply = self.worker.evaluate_batch([EvalRequest(i, vector)])[0]
                if reply.error is not None:
                    raise RuntimeError(f"bare loop: candidate {i} failed: {reply.error}")
            return time.perf_counter() - start

    def candidates(self) -> list[list[float]]:
        return self.vectors


def _bare_run(spec: dict[str, Any]) -> tuple[float, list[list[float]]]:
    """The bare loop's seconds and candidates, in a Ray actor: the same kind of process as a worker's
    (in the driver process the same evaluations ran about 10% slower, which flattered the runner)."""
    actor: Any = ray.remote(num_cpus=1)(_BareLoop).remote(spec)  # type: ignore[attr-defined]
    try:
        seconds: float = ray.get(actor.run.remote())
        return seconds, ray.get(actor.candidates.remote())
    finally:
        ray.kill(actor)


def throughput_task(
    task: str, budget: int, workers: tuple[int, ...] = (1, 2), sparsity: float = 0.7, seed: int = 0
) -> dict[str, Any]:
    """Search-phase trials/s at each worker count, and the same candidates in a bare loop.

    The bare loop runs before and after the jobs and counts with the mean of the two, so that a change
    in load from other processes during the run moves both sides alike.
    """
    with _temporary_home() as home:
        spec = _job_spec(task, 1, budget, sparsity, seed, home)
        connect_ray(None)
        before, vectors = _bare_run(spec)
        runs = {w: _run_job(task, w, budget, sparsity, seed, home) for w in workers}
        after, _ = _bare_run(spec)
    bare_seconds = (before + after) / 2
    trials = len(vectors)
    out: dict[str, Any] = {
        "task": task,
        "budget": budget,
        "sparsity": sparsity,
        "runs": {str(w): {k: v for k, v in r.items() if k != "vectors"} for w, r in runs.items()},
        "same_candidates": all(
            len(r["vectors"]) == trials and np.allclose(r["vectors"], vectors) for r in runs.values()
        ),
        "bare_seconds": bare_seconds,
        "bare_seconds_before": before,
        "bare_seconds_after": after,
        "bare_trials_per_second": trials / bare_seconds,
    }
    one = runs.get(1)
    if one is not None:
        out["runner_overhead"] = one["search_seconds"] / bare_seconds - 1.0
        out["fixed_cost_ms_per_trial"] = 1000.0 * (one["search_seconds"] - bare_seconds) / trials
        if 2 in runs:
            out["speedup_2_workers"] = runs[2]["trials_per_second"] / one["trials_per_second"]
    return out


def throughput_suite(
    tasks: list[str] | None = None, budget: int | None = None, seed: int = 0, workers: tuple[int, ...] = (1, 2)
) -> dict[str, Any]:
    """Per task, plus the headline numbers: speedup and overhead on code-lm, fixed cost on digits-mlp
    (or on the one task asked for)."""
    names = tasks or list(THROUGHPUT_TASKS)
    ours = not ray.is_initialized()
    try:
        results = [throughput_task(t, budget or THROUGHPUT_BUDGETS.get(t, 24), workers, seed=seed) for t in names]
    finally:
        if ours and ray.is_initialized():
            ray.shutdown()
    by_task = {r["task"]: r for r in results}
    scaling = by_task.get("code-lm", results[0])
    fixed = by_task.get("digits-mlp", results[0])
    return {
        "suite": "throughput",
        "tasks": results,
        "speedup_2_workers": scaling.get("speedup_2_workers"),
        "runner_overhead": scaling.get("runner_overhead"),
        "fixed_cost_ms_per_trial": fixed.get("fixed_cost_ms_per_trial"),
        "phases": {k: fixed["runs"].get("1", {}).get(k) for k in PHASES},
        "scaling_task": scaling["task"],
        "fixed_cost_task": fixed["task"],
        "cpus": os.cpu_count(),
        "goals": {
            **{k: v for k, v in GOALS.items() if k != "eval_ratio"},
            "fixed_cost_ms_per_trial": FIXED_COST_GOAL_MS,
        },
    }
