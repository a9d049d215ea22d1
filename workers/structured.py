"""Structured pruning: output channels / neurons physically removed through Torch-Pruning.

The dependency graph carries each removal to the layers that consume it (the next layer's
input columns), so the result is a smaller, faster dense model. Layers whose outputs are coupled (a
gated MLP's gate and up projections, multiplied channel by channel) shrink together: pruned one after
the other, the second plan's indices would point at already-shifted positions, so each coupled set is
pruned once, by the union of its layers' removed channels. Zeroing the union is what the masked model
computes anyway: a product channel is zero as soon as either factor is.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunehive.workers.tasks.base import logits_of


def _out_fn(module: nn.Module) -> Callable[..., Any]:
    if isinstance(module, nn.Conv2d):
        return tp.prune_conv_out_channels
    if isinstance(module, nn.Linear):
        return tp.prune_linear_out_channels
    raise ValueError(f"a channel-pruned layer must be Linear or Conv2d, not {type(module).__name__}")


def coupled_sets(graph: Any, modules: Mapping[str, nn.Module], names: list[str]) -> list[list[str]]:
    """``names`` grouped so that layers whose output channels the graph removes together share a set."""
    index = {id(m): n for n, m in modules.items()}
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for name in names:
        module = modules[name]
        for dep, _ in graph.get_pruning_group(module, _out_fn(module), idxs=[0]):
            other = index.get(id(dep.target.module))
            if other in parent and other != name and not graph.is_in_channel_pruning_fn(dep.handler):
                parent[root(other)] = root(name)
    sets: dict[str, list[str]] = {}
    for name in names:
        sets.setdefault(root(name), []).append(name)
    return list(sets.values())


def prune_channels(model: nn.Module, plan: Mapping[str, list[int]], example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with the listed output channels of each named layer removed (a Hugging Face
    model too: the graph is traced back from its output's logits)."""
    pruned = copy.deepcopy(model).eval()
    with warnings.catch_warnings():  # norms' bare weights: only a removed hidden dimension would touch them
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=example, output_transform=logits_of)
    modules = dict(pruned.named_modules())
    for members in coupled_sets(graph, modules, list(plan)):
        head = modules[members[0]]
        rows = head.weight.shape[0]
        if any(modules[n].weight.shape[0] != rows for n in members):
            raise ValueError(f"coupled layers {members} have different numbers of output channels")
        idxs = sorted({int(i) for n in members for i in plan[n]})
        if not idxs:
            continue
        if len(idxs) >= rows:
            raise ValueError(f"removing every output channel of {', '.join(members)} would disconnect the model")
        graph.get_pruning_group(head, _out_fn(head), idxs=idxs).prune()
    return pruned
