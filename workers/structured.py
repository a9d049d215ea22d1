"""Structured pruning: output channels / neurons physically removed through Torch-Pruning.

The dependency graph carries each removal to the layers that consume it (the next layer's
input columns), so the result is a smaller, faster dense model.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


def prune_channels(model: nn.Module, plan: Mapping[str, list[int]], example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with the listed output channels of each named layer removed."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example)
    modules = dict(pruned.named_modules())
    for name, idxs in plan.items():
        if not idxs:
            continue
        module = modules[name]
        if isinstance(module, nn.Conv2d):
            fn = tp.prune_conv_out_channels
        elif isinstance(module, nn.Linear):
            fn = tp.prune_linear_out_channels
        else:
            raise ValueError(f"layer {name!r} is neither Linear nor Conv2d")
        if len(idxs) >= module.weight.shape[0]:
            raise ValueError(f"removing every output channel of {name!r} would disconnect the model")
        group = graph.get_pruning_group(module, fn, idxs=list(idxs))
        group.prune()
    return pruned
