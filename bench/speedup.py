"""``speedup``: measured latency of channel-pruned models next to their FLOPs, side by side in one run.

For each task and uniform channel sparsity, the physically smaller model (``PruningEngine.export``)
and the dense model are timed in alternation (``workers/latency.py:paired_ms``) at each batch size;
the FLOPs ratio is counted on the same two models. Goal: at least 1.5x at 0.5 on CPU for batch 64.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from prunehive.bench.timing import torch_threads
from prunehive.workers.engine import PruningEngine
from prunehive.workers.latency import batch_of, paired_ms
from prunehive.workers.layers import count_flops
from prunehive.workers.tasks import load_task

SPEEDUP_TASKS = ("digits-cnn", "code-lm")
SPARSITIES = (0.3, 0.5, 0.7)
BATCHES = (1, 64)
GOAL = {"speedup": 1.5, "sparsity": 0.5, "batch": 64}


def _task_rows(task: str, repeats: int, warmup: int) -> list[dict[str, Any]]:
    """One row per (sparsity, batch); a sparsity whose export fails is one row with its error."""
    try:
        engine = PruningEngine(load_task(task, seed=0), "magnitude", "channel", calibration_batches=1)
    except Exception as exc:  # noqa: BLE001 - a task that cannot load is a row, not a crashed suite
        return [{"task": task, "error": f"{type(exc).__name__}: {exc}"}]
    dense = engine.model.eval()
    dense_flops, _ = count_flops(dense, engine.example)
    dense_params = sum(p.numel() for p in dense.parameters())
    rows: list[dict[str, Any]] = []
    for sparsity in SPARSITIES:
        try:
            pruned = engine.export([sparsity] * len(engine.names)).eval()
            flops, _ = count_flops(pruned, engine.example)
        except Exception as exc:  # noqa: BLE001 - e.g. an architecture Torch-Pruning cannot export yet
            rows.append({"task": task, "sparsity": sparsity, "error": f"{type(exc).__name__}: {exc}"})
            continue
        params = sum(p.numel() for p in pruned.parameters())
        for batch in BATCHES:
            inputs = batch_of(engine.example, batch)
            with torch.inference_mode():
                dense_ms, ms = paired_ms(dense, pruned, inputs, repeats, warmup)
            rows.append(
                {
                    "task": task,
                    "sparsity": sparsity,
                    "batch": batch,
                    "dense_ms": dense_ms,
                    "latency_ms": ms,
                    "speedup": dense_ms / ms,
                    "flops_ratio": flops / dense_flops,
                    "flops_speedup": dense_flops / flops,
                    "params_ratio": params / dense_params,
                }
            )
    return rows


def speedup_suite(
    tasks: list[str] | None = None, repeats: int = 15, warmup: int = 3, threads: int | None = 1
) -> dict[str, Any]:
    """Rows for every task, sparsity and batch; the headline is each task's speedup at the goal's point."""
    rows: list[dict[str, Any]] = []
    with torch_threads(threads):
        for task in tasks or list(SPEEDUP_TASKS):
            rows += _task_rows(task, repeats, warmup)
    at_goal = {
        r["task"]: r["speedup"]
        for r in rows
        if r.get("sparsity") == GOAL["sparsity"] and r.get("batch") == GOAL["batch"] and "speedup" in r
    }
    return {
        "suite": "speedup",
        "granularity": "channel",
        "rows": rows,
        "speedup_at_goal": at_goal,
        "goal": GOAL,
        "threads": threads,
        "repeats": repeats,
        "device": "cpu",
        "cpus": os.cpu_count(),
    }
