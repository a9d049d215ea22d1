"""The evaluation worker of a structured search (granularity head, block or structured): the same calls
as ``EvalWorker``, answered by a ``StructuredEngine``, plus the space's level grids and latency table.

Where latency is asked for, every candidate's physically smaller model is timed whole against the dense
one (its ``latency_ms`` and ``speedup``), and ``space_extras`` carries the lookup table the driver's
repair predicts with, so predicted and measured latency can be compared per candidate.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import replace
from typing import Any

import torch

from prunehive.search.structured_space import StructuredSpace
from prunehive.workers.actor import EvalWorker
from prunehive.workers.build import EngineSpec, seeded_task
from prunehive.workers.contracts import EvalReply, EvalRequest, EvalResult, LatencyRequest, WorkerInfo
from prunehive.workers.kl import DenseReference
from prunehive.workers.structure.baselines import structured_baseline
from prunehive.workers.structure.distill import Distill, healed_result
from prunehive.workers.structure.engine import StructuredEngine
from prunehive.workers.structure.timing import StructuredTimer


class StructuredEvalWorker(EvalWorker):
    """One long-lived evaluator of structured level vectors for one task."""

    def __init__(  # noqa: PLR0913 - the same keywords every search worker takes
        self,
        task: str,
        metric: str = "magnitude",
        granularity: str = "structured",
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
        """``levels`` is unused: a sublayer's levels are its units (see ``workers/structure/engine.py``)."""
        if threads:
            torch.set_num_threads(threads)
        start = time.perf_counter()
        task_spec = EngineSpec(task, metric, granularity, per_row, calibration_batches, seed)
        self.structured = StructuredEngine(seeded_task(task_spec), metric, granularity, calibration_batches, solver)
        self.task = self.structured.task
        if fitness == "kl":
            self.structured.reference = DenseReference.build(self.task, self.structured.model)
        self.structured.level_store()  # sparsegpt: the node's refits, built (once) before the search starts
        self.timer = StructuredTimer(self.structured, latency) if latency is not None else None
        self.levels = None
        self.latency = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.build_seconds = time.perf_counter() - start

    def describe(self) -> WorkerInfo:
        e = self.structured
        return WorkerInfo(
            layers=e.layers,
            skipped=e.skipped,
            quality=self.task.quality,
            higher_is_better=self.task.higher_is_better,
            dense_params=e.total_params,
            dense_flops=e.total_flops,
            worker=self.worker_id,
            build_seconds=self.build_seconds,
            device=str(e.device),
        )

    def space_extras(self, latency_budget: float | None = None) -> dict[str, Any]:
        """The sublayers' level grids and, where latency is timed, the lookup table (with its budget) and
        the prediction for the fastest model that keeps one block."""
        out: dict[str, Any] = {"grids": self.structured.grids, "latency": None, "one_block_ms": None}
        if self.timer is not None:
            table = self.timer.table(latency_budget)
            out["latency"] = table.to_dict()
            out["one_block_ms"] = self.timer.one_block_ms(table)
        return out

    def allocation(self, name: str, space: dict[str, Any]) -> list[float]:
        return [float(v) for v in structured_baseline(self.structured, StructuredSpace.from_dict(space), name)]

    def evaluate_batch(self, requests: list[EvalRequest]) -> list[EvalReply]:
        out = []
        for req in requests:
            try:
                vector = list(req.sparsity)
                if req.recovery_steps:  # training-aware selection: distilled from dense before it is scored
                    steps, limit = req.recovery_steps, req.limit
                    result = healed_result(self.structured, vector, steps, None, "kl", req.splits, limit)[0]
                else:
                    result = self.structured.evaluate(vector, splits=req.splits, limit=req.limit)
                result = result.counted()
                if self.timer is not None:
                    ms, dense_ms = self.timer.whole(vector)
                    result = replace(result, latency_ms=ms, speedup=dense_ms / ms)
                out.append(EvalReply(req.candidate_id, result, worker=self.worker_id))
            except Exception as exc:  # noqa: BLE001 - reported per candidate, never swallowed
                line = f"{type(exc).__name__}: {exc}"
                trace = traceback.format_exc(limit=3)
                out.append(EvalReply(req.candidate_id, error=line, worker=self.worker_id, trace=trace))
        return out

    def export(self, vector: list[float], metric: str | None = None, recovery_steps: int = 0) -> torch.nn.Module:
        """The physically smaller model (what the job logs as its pruned model)."""
        if recovery_steps:
            raise ValueError("structured candidates are not fine-tuned (recovery_steps must be 0)")
        return self.structured.smaller_model(list(vector))

    def heal(self, vector: list[float], steps: int, lr: float | None, distill: Distill) -> tuple[EvalResult, float]:
        """The candidate fine-tuned by ``pruning.recovery`` and scored on validation and test (and the rate used)."""
        return healed_result(self.structured, list(vector), steps, lr, distill)

    def level_database(self) -> dict[str, Any] | None:
        """The structured level database the refits come from (None: solver mask stores nothing)."""
        store = self.structured.level_store()
        return store.describe() if store is not None else None
