"""Score an engine's model with given weights in its prunable layers, and count what they removed.

The parameters are pointed at the given tensors (no copy; a stored level is read where it lies) and
get their own dense tensors back afterwards, so the restore is exact. Shared by the level database's
evaluator and by ``prunehive prune --solver sparsegpt``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from prunehive.workers.apply import held, recover
from prunehive.workers.contracts import SplitMetrics
from prunehive.workers.kl import score_splits
from prunehive.workers.tasks.base import Split

if TYPE_CHECKING:
    from prunehive.workers.engine import PruningEngine


def score_with(
    engine: PruningEngine,
    weights: Mapping[str, torch.Tensor],
    splits: tuple[Split, ...],
    recovery_steps: int = 0,
    limit: int | None = None,
) -> dict[str, SplitMetrics]:
    """Each split's scores with ``weights`` swapped in (fine-tuned first, zeros kept, if ``recovery_steps``),
    on the first ``limit`` items of each split where given (see ``workers/kl.py:score_splits``)."""
    task, model = engine.task, engine.model
    modules = dict(model.named_modules())
    snapshot = copy.deepcopy(model.state_dict()) if recovery_steps > 0 else None
    swapped: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        for name, weight in weights.items():
            param = modules[name].weight
            swapped.append((param, param.data))
            weight = weight.to(engine.device)
            # Training writes its weights, so it gets a copy; scoring only reads the given tensor.
            param.data = weight.clone() if recovery_steps > 0 else weight
        if recovery_steps > 0:  # the given weights' zeros held through the fine-tune
            recover(task, model, held(model, list(weights)), recovery_steps)
        metrics = score_splits(task, model, splits, limit, engine.reference)
    finally:
        while swapped:
            param, tensor = swapped.pop()
            param.data = tensor
        if snapshot is not None:
            model.load_state_dict(snapshot)
    return metrics


def measure(
    engine: PruningEngine, dense_nonzeros: Mapping[str, int], nonzeros: Mapping[str, int]
) -> tuple[float, dict[str, float], int, int]:
    """Achieved sparsity, per-layer sparsity, nonzero parameters and FLOPs, as ``PruningEngine`` counts them
    for unstructured and N:M: a layer's FLOPs scale with its density."""
    per_layer: dict[str, float] = {}
    removed = prunable = 0
    saved = 0.0
    for lay in engine.layers:
        k = max(0, dense_nonzeros[lay.name] - nonzeros[lay.name])
        per_layer[lay.name] = k / lay.params
        saved += lay.flops * k / lay.params
        removed += k
        prunable += lay.params
    return removed / prunable, per_layer, engine.total_params - removed, int(engine.total_flops - saved)


def nonzeros(weights: Mapping[str, torch.Tensor]) -> dict[str, int]:
    return {n: int(torch.count_nonzero(w)) for n, w in weights.items()}

