"""What fills a level database: SparseGPT with dense inputs, or a metric's masks (cheap, no calibration)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from prunehive.workers.masks import Granularity
from prunehive.workers.solvers.sparsegpt import ObsLayer
from prunehive.workers.solvers.walk import hessian_groups
from prunehive.workers.tasks.base import Batch, Task

if TYPE_CHECKING:
    from prunehive.workers.engine import PruningEngine


def sparsegpt_levels(
    task: Task,
    model: nn.Module,
    names: list[str],
    granularity: Granularity,
    metric: str,
    levels: Sequence[float],
    batches: list[Batch],
    damping: float = 0.01,
) -> Iterator[tuple[str, list[torch.Tensor]]]:
    """Each layer at every level, from the dense model's inputs; one Hessian and one H⁻¹ per layer serve
    all of its levels."""
    modules = dict(model.named_modules())
    for layers, hessians in hessian_groups(task, model, names, batches):
        for name in layers:
            obs = ObsLayer(modules[name].weight.data, hessians.pop(name).mean(), damping=damping)
            yield name, [obs.prune(level, granularity, metric) for level in levels]


def mask_levels(engine: PruningEngine, levels: Sequence[float]) -> Iterator[tuple[str, list[torch.Tensor]]]:
    """Each layer's dense weight times its metric's mask at every level."""
    modules = dict(engine.model.named_modules())
    for name in engine.names:
        weight = modules[name].weight.detach()
        yield name, [weight * engine.rankings[name].mask(level) for level in levels]
