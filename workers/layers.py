"""Find a model's prunable layers with their parameter counts and FLOPs.

FLOPs come from torch's own FlopCounterMode on the task's example input, never counted by hand.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunehive.search.space import Layer

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)


def count_flops(model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Total forward FLOPs for ``example`` and the FLOPs of each named submodule."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    per_module: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        # FlopCounterMode names submodules "<RootClass>.<path>"; strip the root's class name.
        _, _, path = key.partition(".")
        per_module[path] = int(sum(ops.values()))
    return int(counter.get_total_flops()), per_module


def find_prunable_layers(model: nn.Module, names: list[str], example: torch.Tensor) -> list[Layer]:
    """Describe the named Linear/Conv2d modules: kind, weight shape, weight count, FLOPs."""
    modules = dict(model.named_modules())
    _, flops = count_flops(model, example)
    layers = []
    for name in names:
        module = modules.get(name)
        if not isinstance(module, PRUNABLE_TYPES):
            raise ValueError(f"layer {name!r} is not a Linear or Conv2d module")
        layers.append(
            Layer(
                name=name,
                kind="linear" if isinstance(module, nn.Linear) else "conv2d",
                shape=tuple(module.weight.shape),
                params=module.weight.numel(),
                flops=flops.get(name, 0),
            )
        )
    return layers


def count_params(model: nn.Module) -> int:
    """Nonzero parameters: what a sparse format would store."""
    return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
