"""Applying a candidate to a model: the one place pruned weights are zeroed and the recovery fine-tune runs.

A candidate, once chosen, is a set of keep-masks by parameter name (``CandidateMasks``): each prunable
layer's ``<layer>.weight`` and, under ``channel`` granularity, its ``<layer>.bias`` too, since a removed
output channel must not keep emitting its bias (``output_keep`` is that rule). The engine's fine-tune,
the solvers' recovery, ``prunehive export``, the model a job logs to MLflow and the federated clients
all apply masks through ``apply``; the engine's fast evaluation swaps weights only inside a forward pass
and never writes them, but takes its bias rule from ``output_keep`` as well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from prunehive.workers.tasks.base import Task

CandidateMasks = dict[str, torch.Tensor]  # parameter name ("fc1.weight", "fc1.bias") -> bool keep-mask


def output_keep(weight_mask: torch.Tensor) -> torch.Tensor:
    """``channel``: the (out_channels,) keep-mask of a layer's outputs, an output kept while any of its
    weights is. Reduced dim by dim, so an expanded (stride-0) mask is never copied to its full size."""
    keep = weight_mask.bool()
    while keep.dim() > 1:
        keep = keep.any(dim=-1)
    return keep


def candidate_masks(model: nn.Module, layer_masks: Mapping[str, torch.Tensor], channel: bool) -> CandidateMasks:
    """Keep-masks by parameter name from each layer's weight mask (by layer name); under ``channel``
    (``channel`` true) a layer with a bias gets its bias mask by ``output_keep``."""
    modules = dict(model.named_modules())
    out: CandidateMasks = {}
    for name, mask in layer_masks.items():
        out[f"{name}.weight"] = mask
        if channel and getattr(modules[name], "bias", None) is not None:
            out[f"{name}.bias"] = output_keep(mask)
    return out


def with_biases(masks: Mapping[str, torch.Tensor], biases: set[str]) -> CandidateMasks:
    """``masks`` (weights by parameter name) plus, for each weight whose layer's bias is named in ``biases``,
    that bias's mask by ``output_keep``: the channel rule where only parameter names are known."""
    out = dict(masks)
    for name, mask in masks.items():
        bias = name.removesuffix(".weight") + ".bias"
        if name.endswith(".weight") and bias in biases:
            out[bias] = output_keep(mask).clone()
    return out


def held(model: nn.Module, layers: list[str]) -> CandidateMasks:
    """The masks a model's current weights already carry (their nonzeros): a solver's updated weights,
    held through a fine-tune."""
    modules = dict(model.named_modules())
    return {f"{n}.weight": modules[n].weight.detach() != 0 for n in layers}


def reapplier(model: nn.Module, candidate: Mapping[str, torch.Tensor]) -> Callable[[], None]:
    """A function zeroing ``candidate``'s pruned entries in ``model`` in place (``Task.train``'s ``after_step``).
    The masks are cast to each parameter's dtype and device once, here."""
    params = dict(model.named_parameters())
    unknown = set(candidate) - set(params)
    if unknown:
        raise ValueError(f"masks name parameters the model does not have: {sorted(unknown)}")
    pairs = [(params[n], m.to(device=params[n].device, dtype=params[n].dtype)) for n, m in candidate.items()]

    def zero() -> None:
        with torch.no_grad():
            for param, mask in pairs:
                param.mul_(mask)

    return zero


def apply(model: nn.Module, candidate: Mapping[str, torch.Tensor]) -> None:
    """Zero ``candidate``'s pruned weights (and, where it holds bias masks, biases) in ``model``, in place."""
    reapplier(model, candidate)()


def masked(tensors: Mapping[str, torch.Tensor], candidate: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """New tensors with ``candidate``'s pruned entries zeroed, the rest as given: ``apply`` for a state dict
    (a federated server's model) or, being differentiable, for the parameters a loss is computed with."""
    out = dict(tensors)
    for name, mask in candidate.items():
        if name in out:
            out[name] = out[name] * mask.to(device=out[name].device, dtype=out[name].dtype)
    return out


def recover(task: Task, model: nn.Module, candidate: Mapping[str, torch.Tensor], steps: int) -> None:
    """Apply ``candidate``, then the recovery fine-tune: ``steps`` of the task's training at a tenth of its
    learning rate, the masks re-applied after every step so pruned weights stay zero."""
    zero = reapplier(model, candidate)
    zero()
    if steps > 0:
        task.train(model, steps, lr=task.lr * 0.1, after_step=zero)
