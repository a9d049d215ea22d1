"""``eval --solver S``: a level database's size and a candidate's evaluation cost, compact against dense.

The same task's database is built in both layouts (``workers/solvers/level_db.py``): every level a full
tensor (``dense``), or kept values plus a bitmask (``compact``, what workers use). Reported side by side
in one run: the average bytes of a level over the model's own bytes, each layout's build time, and the
median seconds of evaluating a candidate (a random level per layer) through each, interleaved repeat by
repeat with a bare forward pass. Goals: a compact level <= 0.6x the model's bytes; a candidate's cost
within 10% of the dense layout's. The compact layout is also timed with no decoded levels kept
(``uncached``), the cost of a level that has to be decoded. Reading a candidate's levels is also timed
alone for each layout (no forward pass, so little noise): ``uncached_read_share`` is what decoding every
level adds, as a share of a candidate's evaluation on the dense layout. ``llama-25m`` (``level_tasks.py``) is a
Llama of realistic shape built from a config for this benchmark.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunehive.bench.level_tasks import LLAMA_25M, write_llama_25m
from prunehive.bench.timing import timed, torch_threads
from prunehive.workers.engine import PruningEngine
from prunehive.workers.solvers.level_db import LevelDatabase
from prunehive.workers.solvers.level_engine import LevelEngine, open_database
from prunehive.workers.tasks import load_task

GOALS = {"level_bytes_over_model": 0.6, "level_cost_ratio": 1.1}


def model_bytes(model: torch.nn.Module) -> int:
    """The model's own bytes: its parameters and buffers (tied weights once)."""
    seen: dict[int, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        seen[t.data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def read_levels(db: Any, levels: list[int]) -> list[torch.Tensor]:
    """Every layer's weight at its level, as a candidate's evaluation reads them."""
    return [db.weight(n, i) for n, i in zip(db.layers, levels, strict=True)]


def level_eval_task(
    name: str,
    solver: str = "sparsegpt",
    repeats: int = 15,
    warmup: int = 3,
    threads: int | None = 1,
    seed: int = 0,
    min_seconds: float = 1.0,
) -> dict[str, Any]:
    """One task's row: sizes, build times and per-candidate costs of both layouts (see the module doc)."""
    with torch_threads(threads):
        task = load_task(name, seed=seed)
        engine = PruningEngine(task, seed=seed)
        dbs = {layout: open_database(engine, solver, layout=layout) for layout in ("dense", "compact")}
        uncached = LevelDatabase.open(dbs["compact"].path, cache_bytes=0)
        runners = {
            "dense": LevelEngine(engine, dbs["dense"]),
            "compact": LevelEngine(engine, dbs["compact"]),
            "compact_uncached": LevelEngine(engine, uncached),
        }
        n_levels = len(dbs["compact"].levels)
        rng = np.random.default_rng(seed)

        def draw() -> list[int]:
            return [int(i) for i in rng.integers(0, n_levels, len(engine.names))]

        def bare() -> None:
            with torch.inference_mode():
                for x, _ in task.batches("validation"):
                    engine.model(x)

        def candidate(runner: LevelEngine, levels: list[int]) -> Callable[[], Any]:
            return lambda: runner.evaluate(levels=levels, splits=("validation",))

        for _ in range(warmup):
            levels = draw()
            for runner in runners.values():
                runner.evaluate(levels=levels, splits=("validation",))
            bare()
        if min_seconds > 0:
            repeats = max(repeats, min(100_000, math.ceil(min_seconds / max(timed(bare), 1e-6))))
        times: dict[str, list[float]] = {k: [] for k in [*runners, "bare"]}
        for i in range(repeats):
            levels = draw()  # every layout evaluates the same candidate, in an order rotating by repeat
            jobs = [(k, candidate(r, levels)) for k, r in runners.items()] + [("bare", bare)]
            for k, fn in jobs[i % len(jobs) :] + jobs[: i % len(jobs)]:
                times[k].append(timed(fn))
        reads: dict[str, list[float]] = {k: [] for k in runners}
        for _ in range(max(repeats, 20)):  # the reads alone: what the layouts differ in, without the forward's noise
            levels = draw()
            for k, runner in runners.items():
                reads[k].append(timed(lambda db=runner.db, lv=levels: read_levels(db, lv)))
    size = model_bytes(engine.model)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "task": name,
        "solver": solver,
        "repeats": repeats,
        "threads": threads or torch.get_num_threads(),
        "levels": n_levels,
        "model_bytes": size,
        "dense_db_bytes": dbs["dense"].bytes,
        "compact_db_bytes": dbs["compact"].bytes,
        "dense_level_over_model": dbs["dense"].bytes / n_levels / size,
        "compact_level_over_model": dbs["compact"].bytes / n_levels / size,
        "dense_build_seconds": dbs["dense"].build_seconds,
        "compact_build_seconds": dbs["compact"].build_seconds,
        "eval_seconds_dense_db": med["dense"],
        "eval_seconds_compact_db": med["compact"],
        "eval_seconds_compact_uncached": med["compact_uncached"],
        "bare_seconds": med["bare"],
        "cost_ratio": med["compact"] / med["dense"],
        "cost_ratio_paired": statistics.median(c / d for c, d in zip(times["compact"], times["dense"], strict=True)),
        "uncached_cost_ratio": med["compact_uncached"] / med["dense"],
        "read_seconds_dense_db": statistics.median(reads["dense"]),
        "read_seconds_compact_db": statistics.median(reads["compact"]),
        "read_seconds_compact_uncached": statistics.median(reads["compact_uncached"]),
        "uncached_read_share": (statistics.median(reads["compact_uncached"]) - statistics.median(reads["dense"]))
        / med["dense"],
        "goals": GOALS,
    }


def level_eval_suite(
    tasks: list[str],
    solver: str,
    repeats: int = 15,
    warmup: int = 3,
    threads: int | None = 1,
    min_seconds: float = 1.0,
) -> dict[str, Any]:
    start = time.perf_counter()
    results = []
    for name in tasks:
        with tempfile.TemporaryDirectory(prefix="prunehive-levels-") as tmp:
            ref = write_llama_25m(Path(tmp)) if name == LLAMA_25M else name
            row = level_eval_task(ref, solver, repeats=repeats, warmup=warmup, threads=threads, min_seconds=min_seconds)
        results.append({**row, "task": name})
    return {
        "suite": "eval",
        "solver": solver,
        "tasks": results,
        "cost_ratio": {r["task"]: r["cost_ratio"] for r in results},
        "level_bytes_over_model": {r["task"]: r["compact_level_over_model"] for r in results},
        "goals": GOALS,
        "seconds": time.perf_counter() - start,
    }
