"""SparseGPT at one per-layer sparsity, as the paper runs it: block by block, each block calibrated on
the outputs of the blocks already pruned before it (``prunehive prune --solver sparsegpt``)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from prunehive.workers.contracts import EvalResult
from prunehive.workers.masks import Granularity
from prunehive.workers.solvers.sparsegpt import OBS_METRIC, ObsLayer
from prunehive.workers.solvers.swap import measure, nonzeros, score_with
from prunehive.workers.solvers.walk import hessian_groups
from prunehive.workers.tasks.base import Batch, Split, Task

if TYPE_CHECKING:
    from prunehive.workers.engine import PruningEngine


def prune_sequential(
    task: Task,
    model: nn.Module,
    sparsity: Mapping[str, float],
    granularity: Granularity,
    batches: list[Batch],
    metric: str = OBS_METRIC,
    damping: float = 0.01,
) -> dict[str, torch.Tensor]:
    """Pruned weights of the layers named in ``sparsity``.

    The model's weights are replaced while it walks (each pruned block feeds the next) and the dense
    weights are put back before it returns, so the model is left as it was.
    """
    modules = dict(model.named_modules())
    dense = {n: modules[n].weight.data for n in sparsity}
    pruned: dict[str, torch.Tensor] = {}
    try:
        for layers, hessians in hessian_groups(task, model, list(sparsity), batches):
            for name in layers:
                obs = ObsLayer(dense[name], hessians.pop(name).mean(), damping=damping)
                pruned[name] = obs.prune(sparsity[name], granularity, metric)
                modules[name].weight.data = pruned[name]
    finally:
        for name, weight in dense.items():
            modules[name].weight.data = weight
    return pruned


def evaluate_sequential(
    engine: PruningEngine,
    sparsity: Mapping[str, float],
    splits: tuple[Split, ...] = ("validation", "test"),
    recovery_steps: int = 0,
    calibration_batches: int = 8,
) -> EvalResult:
    """SparseGPT's weights at ``sparsity`` (by the engine's metric), scored on ``splits``; the model is left dense."""
    start = time.perf_counter()
    batches = engine.task.calibration_batches(calibration_batches)
    weights = prune_sequential(engine.task, engine.model, sparsity, engine.granularity, batches, engine.metric_name)
    metrics = score_with(engine, weights, splits, recovery_steps)
    modules = dict(engine.model.named_modules())
    dense = nonzeros({n: modules[n].weight for n in weights})
    achieved, per_layer, params, flops = measure(engine, dense, nonzeros(weights))
    return EvalResult(metrics, achieved, per_layer, params, flops, time.perf_counter() - start)
