"""Calibration statistics collected with hooks: what data-aware metrics need besides W.

X is the per-input-channel L2 norm of a layer's input over all calibration tokens (Wanda);
G is the mean gradient of the loss and F the mean squared gradient, a diagonal Fisher
estimate (SNIP, Taylor).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunehive.workers.tasks.base import Batch, Task


@dataclass
class LayerStats:
    """Everything a scoring metric may read for one layer. X is pre-broadcast to W's shape."""

    W: torch.Tensor
    X: torch.Tensor
    G: torch.Tensor
    F: torch.Tensor

    @staticmethod
    def broadcast_x(norms: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Per-input-channel norms laid out along W's input dimension."""
        shape = [1, -1] + [1] * (weight.dim() - 2)
        return norms.reshape(shape).expand_as(weight)


def _input_sq_norms(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """Sum of squares of each input channel over batch, positions and (for conv) space."""
    if isinstance(module, nn.Conv2d):
        return inp.detach().pow(2).sum(dim=(0, 2, 3))
    return inp.detach().reshape(-1, inp.shape[-1]).pow(2).sum(dim=0)


def collect_stats(
    task: Task,
    model: nn.Module,
    names: list[str],
    batches: int = 8,
    with_grads: bool = True,
    data: list[Batch] | None = None,
) -> dict[str, LayerStats]:
    """Run ``batches`` calibration batches (or the given ``data``, e.g. a federated client's own rows)
    through ``model`` with hooks on the named layers."""
    modules = dict(model.named_modules())
    sq: dict[str, torch.Tensor] = {}
    grad_sum = {n: torch.zeros_like(modules[n].weight) for n in names}
    grad_sq = {n: torch.zeros_like(modules[n].weight) for n in names}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            norms = _input_sq_norms(module, args[0])
            sq[name] = sq[name] + norms if name in sq else norms

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    calib = task.calibration_batches(batches) if data is None else data
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for x, y in calib:
            x, y = x.to(device), y.to(device)
            if with_grads:
                model.zero_grad(set_to_none=True)
                task.loss_fn(model(x), y).backward()
                for n in names:
                    g = modules[n].weight.grad
                    if g is not None:
                        grad_sum[n] += g
                        grad_sq[n] += g.pow(2)
            else:
                with torch.no_grad():
                    model(x)
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    k = max(len(calib), 1)
    out = {}
    for n in names:
        w = modules[n].weight.detach()
        out[n] = LayerStats(
            W=w.clone(),
            X=LayerStats.broadcast_x(sq[n].sqrt(), w),
            G=grad_sum[n] / k,
            F=grad_sq[n] / k,
        )
    return out
