"""``quality``: the benchmark job kind (:class:`BenchmarkRun`) on the built-in tasks, digits-mlp at 90% and
code-lm at 70% (Wanda) sparsity: every strategy on the same budget over several seeds, next to the
heuristics; the report and plots land in the default MLflow store (``PRUNEHIVE_HOME``).
"""

from __future__ import annotations

from typing import Any

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.benchmark.driver import BenchmarkRun
from prunehive.platform.settings import default_database_url
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore

# The README's benchmark (also examples/<task>-benchmark.yaml): the same budget for every strategy.
QUALITY_SPECS: dict[str, dict[str, Any]] = {
    "digits-mlp": {
        "pruning": {"sparsity": 0.9, "metric": "magnitude", "granularity": "unstructured"},
        "search": {"budget": 200},
        "benchmark": {"sparsities": [0.8, 0.9, 0.95]},
    },
    "code-lm": {
        "pruning": {"sparsity": 0.7, "metric": "wanda", "granularity": "unstructured"},
        "search": {"budget": 80},
        "benchmark": {"sparsities": [0.7], "strategies": ["evolution", "bayesian", "rl", "random"]},
    },
}
QUALITY_STRATEGIES = ["evolution", "nsga2", "bayesian", "rl", "random"]  # unless the task's preset names its own


def quality_spec(
    task: str, budget: int | None = None, seeds: int | None = None, strategies: list[str] | None = None
) -> dict[str, Any]:
    """The benchmark job the quality suite runs on ``task`` (a built-in with a preset, or any task at 50%)."""
    preset = QUALITY_SPECS.get(task, {"pruning": {"sparsity": 0.5}, "search": {"budget": 100}, "benchmark": {}})
    return {
        "kind": "benchmark",
        "name": f"{task}-benchmark",
        "task": task,
        "pruning": dict(preset["pruning"]),
        "search": {"budget": budget or preset["search"]["budget"]},
        "benchmark": {
            **preset["benchmark"],
            "strategies": strategies or preset["benchmark"].get("strategies", QUALITY_STRATEGIES),
            "seeds": seeds or 3,
            "baselines": ["uniform", "global", "erk", "owl"],
        },
        "resources": {"workers": 2},
    }


def quality_suite(
    tasks: list[str] | None = None,
    budget: int | None = None,
    seeds: int | None = None,
    strategies: list[str] | None = None,
) -> dict[str, Any]:
    """Run the benchmark job kind on each task into the default job store and MLflow store."""
    store = JobStore(default_database_url())
    results = []
    try:
        for task in tasks or list(QUALITY_SPECS):
            job_id = start_job(store, parse_spec(quality_spec(task, budget, seeds, strategies)))
            results.append(BenchmarkRun(store, job_id, show_progress=False).run())
    finally:
        store.close()
    return {"suite": "quality", "tasks": results}
