"""Building a pruning engine from a job's task and pruning fields, the same way wherever it is built.

An evaluation worker and ``prunehive export`` must rank weights identically, or an exported candidate
would not be the one the job scored: both seed every generator, load the task and build the engine
through ``build_engine``. (A separate module from ``apply.py``, which the engine itself imports.)
"""

from __future__ import annotations

from dataclasses import dataclass

from prunehive.workers.engine import PruningEngine
from prunehive.workers.tasks import TaskRef, load_task
from prunehive.workers.tasks.base import Task, seed_everything


@dataclass(frozen=True)
class EngineSpec:
    """What an engine is built from: the spec's task and its ``pruning`` fields."""

    task: TaskRef
    metric: str = "magnitude"
    granularity: str = "unstructured"
    per_row: bool = False
    calibration_batches: int = 8
    seed: int = 0
    device: str = "cpu"
    with_grads: bool | None = None  # True for a metric search (its formulas may read G and F)


def seeded_task(spec: EngineSpec) -> Task:
    """Every generator seeded, then the task loaded: what an engine (of any subclass) is built on."""
    seed_everything(spec.seed)
    return load_task(spec.task, seed=spec.seed)


def build_engine(spec: EngineSpec) -> PruningEngine:
    """The seeded task's engine (calibration statistics and rankings)."""
    return PruningEngine(
        seeded_task(spec),
        spec.metric,
        spec.granularity,
        per_row=spec.per_row,
        calibration_batches=spec.calibration_batches,
        seed=spec.seed,
        device=spec.device,
        with_grads=spec.with_grads,
    )
