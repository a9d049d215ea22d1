"""``eval``: on a warm engine, the cost of evaluating one candidate against a bare forward pass over the
same evaluation data (goal: ratio <= 1.2)."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any

import numpy as np
import torch

from prunehive.bench.timing import GOALS, timed, torch_threads
from prunehive.search.space import SearchSpace
from prunehive.workers.engine import PruningEngine
from prunehive.workers.tasks import load_task

EVAL_TASKS = ("digits-mlp", "code-lm")


def eval_task(
    name: str,
    repeats: int = 15,
    warmup: int = 3,
    sparsity: float = 0.7,
    threads: int | None = 1,
    seed: int = 0,
    min_seconds: float = 1.0,
) -> dict[str, Any]:
    """Median seconds of ``engine.evaluate`` (validation) and of a bare forward pass, and their ratio.

    Both run in this process on the same warm model and data, interleaved repeat by repeat (the order
    alternating) so that load from other processes hits both alike. Every repeat evaluates a fresh
    random vector repaired onto ``sparsity``. Fast tasks repeat more than ``repeats`` times, until the
    bare forward passes alone take about ``min_seconds``.
    """
    with torch_threads(threads):
        task = load_task(name, seed=seed)
        start = time.perf_counter()
        engine = PruningEngine(task, seed=seed)
        build_seconds = time.perf_counter() - start
        model = engine.model
        space = SearchSpace(engine.layers, target=sparsity)
        rng = np.random.default_rng(seed)
        lo, hi = space.bounds()

        def bare() -> None:
            with torch.inference_mode():
                for x, _ in task.batches("validation"):
                    model(x)

        for _ in range(warmup):
            engine.evaluate(space.repair(rng.uniform(lo, hi)), splits=("validation",))
            bare()
        if min_seconds > 0:
            repeats = max(repeats, min(100_000, math.ceil(min_seconds / max(timed(bare), 1e-6))))
        vectors = [space.repair(rng.uniform(lo, hi)) for _ in range(repeats)]
        evals, bares = [], []
        for i, vector in enumerate(vectors):

            def candidate(v: np.ndarray = vector) -> None:
                engine.evaluate(v, splits=("validation",))

            if i % 2:
                bares.append(timed(bare))
                evals.append(timed(candidate))
            else:
                evals.append(timed(candidate))
                bares.append(timed(bare))
    eval_s, bare_s = statistics.median(evals), statistics.median(bares)
    return {
        "task": name,
        "repeats": repeats,
        "threads": threads or torch.get_num_threads(),
        "sparsity": sparsity,
        "build_seconds": build_seconds,
        "eval_seconds": eval_s,
        "bare_seconds": bare_s,
        "ratio": eval_s / bare_s,
        "ratio_paired": statistics.median(e / b for e, b in zip(evals, bares, strict=True)),
        "goal": GOALS["eval_ratio"],
    }


def eval_suite(
    tasks: list[str] | None = None,
    repeats: int = 15,
    warmup: int = 3,
    threads: int | None = 1,
    min_seconds: float = 1.0,
) -> dict[str, Any]:
    results = [
        eval_task(t, repeats=repeats, warmup=warmup, threads=threads, min_seconds=min_seconds)
        for t in (tasks or EVAL_TASKS)
    ]
    return {
        "suite": "eval",
        "tasks": results,
        "eval_ratio": {r["task"]: r["ratio"] for r in results},
        "goal": GOALS["eval_ratio"],
    }
