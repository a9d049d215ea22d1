"""The evaluation worker: a plain class the runner wraps as a Ray actor.

It builds the task once (model, calibration statistics, rankings) and then only evaluates
candidates. Nothing here imports Ray, so the same class runs in tests and in a bare loop.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from typing import Any

import torch

from prunehive.search.space import SearchSpace
from prunehive.workers.baselines import baseline_allocation
from prunehive.workers.build import EngineSpec, build_engine
from prunehive.workers.contracts import EvalReply, EvalRequest, LatencyRequest, WorkerInfo
from prunehive.workers.engine import PruningEngine
from prunehive.workers.kl import DenseReference
from prunehive.workers.latency import LatencyMeter
from prunehive.workers.solvers.level_db import DEFAULT_LEVELS
from prunehive.workers.solvers.level_engine import LevelEngine, open_database


class EvalWorker:
    """One long-lived evaluator for one (task, metric, granularity)."""

    def __init__(
        self,
        task: str,
        metric: str = "magnitude",
        granularity: str = "unstructured",
        per_row: bool = False,
        calibration_batches: int = 8,
        seed: int = 0,
        threads: int | None = None,
        gpus: float = 0.0,
        with_grads: bool | None = None,
        latency: LatencyRequest | None = None,
        solver: str = "mask",
        levels: list[float] | None = None,
        fitness: str = "quality",
    ) -> None:
        """``latency``: time every candidate against the dense model (only jobs that ask pay for it).
        ``solver`` sparsegpt: candidates are read from the node's level database (built on first use).
        ``fitness`` kl: the dense model's validation outputs are kept, and every result has its KL from them."""
        if threads:
            torch.set_num_threads(threads)
        device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
        start = time.perf_counter()
        self.engine = self.make_engine(
            EngineSpec(task, metric, granularity, per_row, calibration_batches, seed, device, with_grads)
        )
        self.task = self.engine.task
        if fitness == "kl":
            self.engine.reference = DenseReference.build(self.task, self.engine.model)
        self.levels: LevelEngine | None = None
        if solver != "mask":
            database = open_database(self.engine, solver, levels or DEFAULT_LEVELS, calibration_batches)
            self.levels = LevelEngine(self.engine, database)
        self.latency = LatencyMeter(self.engine, latency) if latency is not None else None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.build_seconds = time.perf_counter() - start

    def make_engine(self, spec: EngineSpec) -> PruningEngine:
        """The engine candidates are scored with (a federated search's worker scores them on clients)."""
        return build_engine(spec)

    def describe(self) -> WorkerInfo:
        """What the driver needs to build the search space, without loading any model itself."""
        return WorkerInfo(
            layers=list(self.engine.layers),
            skipped=list(self.engine.skipped),
            quality=self.task.quality,
            higher_is_better=self.task.higher_is_better,
            dense_params=self.engine.total_params,
            dense_flops=self.engine.total_flops,
            worker=self.worker_id,
            build_seconds=self.build_seconds,
            device=str(self.engine.device),
        )

    def allocation(self, name: str, space: dict[str, Any]) -> list[float]:
        return [float(v) for v in baseline_allocation(self.engine, SearchSpace.from_dict(space), name)]

    def evaluate_batch(self, requests: list[EvalRequest]) -> list[EvalReply]:
        """Evaluate several candidates in one call (fast tasks amortise the call's cost).

        An exception inside one evaluation fails that candidate only: its reply carries the error, so
        the driver records the trial as failed and goes on.
        """
        out = []
        for req in requests:
            try:
                if req.metric:  # a metric search's candidate carries its own importance metric
                    self.engine.use_metric(req.metric)
                # All zeros is the dense model (a summary's ``dense`` entry): the engine swaps no weight in,
                # whatever the solver, so a level database need not hold level 0.
                dense = not any(req.sparsity)
                evaluator = self.levels if self.levels is not None and not req.metric and not dense else self.engine
                result = evaluator.evaluate(
                    req.sparsity, splits=req.splits, recovery_steps=req.recovery_steps, limit=req.limit
                ).counted()
                if self.latency is not None:
                    result = self.latency.attach(result, req.sparsity)
                out.append(EvalReply(req.candidate_id, result, worker=self.worker_id))
            except Exception as exc:  # noqa: BLE001 - reported per candidate, never swallowed
                line = f"{type(exc).__name__}: {exc}"
                trace = traceback.format_exc(limit=3)
                out.append(EvalReply(req.candidate_id, error=line, worker=self.worker_id, trace=trace))
        return out

    def export(self, vector: list[float], metric: str | None = None, recovery_steps: int = 0) -> torch.nn.Module:
        """A candidate's model as ``prunehive export`` writes it: pruned weights zeroed, fine-tuned where
        the job fine-tuned its candidates (physically smaller for channel granularity)."""
        if metric:
            self.engine.use_metric(metric)
        if self.levels is not None and not metric:
            return self.levels.export(vector, recovery_steps)
        return self.engine.export(vector, recovery_steps)

    def level_database(self) -> dict[str, Any] | None:
        """The level database's path, build time, size and levels, for the job summary (None: solver mask)."""
        return self.levels.describe() if self.levels is not None else None
