"""Forward FLOPs of a channel-pruned model, without building it.

Removing output channels of a layer also removes the inputs of every layer that consumes them (through
activations, pooling and flattening). Torch-Pruning's dependency graph says which layers those are and
how many of their inputs one channel stands for; FlopCounterMode gives each layer's dense FLOPs. A
Linear or ungrouped Conv2d costs ``2 x outputs x inputs x (kernel and positions)``, so its pruned
FLOPs are its dense FLOPs scaled by the kept fraction of its outputs and of its inputs: the same integer
that FlopCounterMode counts on the model ``PruningEngine.export`` builds, at the cost of a few
multiplications per candidate.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from prunehive.workers.layers import count_flops


def _first_tensor(output: Any) -> torch.Tensor:
    """The tensor to trace the graph back from: a Hugging Face model returns an output object."""
    if isinstance(output, torch.Tensor):
        return output
    if getattr(output, "logits", None) is not None:
        return output.logits
    values = output.values() if isinstance(output, Mapping) else output
    return next(v for v in values if isinstance(v, torch.Tensor))


@dataclass(frozen=True)
class _Touch:
    """One Linear/Conv2d dimension that a removed channel of some prunable layer shrinks."""

    module: str
    inputs: bool  # the consumer's inputs (else outputs: the layer itself, or one coupled to it)
    per_channel: int  # entries of that dimension per removed channel (positions, after a flatten)
    first: int  # where the layer's channel 0 lands in that dimension (an offset, after a concatenation)


class ChannelFlops:
    """Counts the FLOPs of ``model`` with some output channels of the named layers removed."""

    def __init__(self, model: nn.Module, layers: list[str], example: torch.Tensor) -> None:
        copied = copy.deepcopy(model).eval()  # the graph is traced on a copy, as prune_channels does
        self.dense, per_module = count_flops(copied, example)
        graph = tp.DependencyGraph().build_dependency(copied, example_inputs=example, output_transform=_first_tensor)
        modules = dict(copied.named_modules())
        names = {id(m): n for n, m in modules.items()}
        self.touches: dict[str, list[_Touch]] = {}
        self.shape: dict[str, tuple[int, int, int]] = {}  # module -> (dense FLOPs, outputs, inputs)
        for layer in layers:
            module = modules[layer]
            fn = tp.prune_conv_out_channels if isinstance(module, nn.Conv2d) else tp.prune_linear_out_channels
            touches = []
            for dep, idxs in graph.get_pruning_group(module, fn, idxs=[0]):
                target = dep.target.module
                if not isinstance(target, nn.Linear | nn.Conv2d):
                    continue  # activations, pooling, norms: FlopCounterMode counts none of them
                name = names[id(target)]
                touches.append(_Touch(name, graph.is_in_channel_pruning_fn(dep.handler), len(idxs), int(min(idxs))))
                inputs = target.in_features if isinstance(target, nn.Linear) else target.in_channels
                self.shape[name] = (per_module.get(name, 0), target.weight.shape[0], inputs)
            self.touches[layer] = touches
        shrunk = [(t.module, t.inputs) for touches in self.touches.values() for t in touches]
        # Coupled layers (a gated MLP's gate and up projections) shrink the same dimensions: the channels
        # removed there are the union of theirs, so counts alone no longer add up.
        self.coupled = len(shrunk) != len(set(shrunk))

    def count(self, channels: Mapping[str, int], removed: Mapping[str, torch.Tensor] | None = None) -> int:
        """Total forward FLOPs with ``channels[layer]`` output channels gone from each named layer;
        where layers are ``coupled``, ``removed`` must say which (a bool per output channel)."""
        cut = {name: [0, 0] for name in self.shape}  # module -> [outputs removed, inputs removed]
        if not self.coupled:
            for layer, k in channels.items():
                for t in self.touches[layer]:
                    cut[t.module][t.inputs] += k * t.per_channel
        elif removed is None:
            raise ValueError("coupled layers need the removed channels themselves, not only their number")
        else:
            unions: dict[tuple[str, bool], torch.Tensor] = {}
            for layer, mask in removed.items():
                for t in self.touches[layer]:
                    size = self.shape[t.module][2 if t.inputs else 1]
                    union = unions.setdefault((t.module, t.inputs), torch.zeros(size, dtype=torch.bool))
                    spread = mask.cpu().repeat_interleave(t.per_channel)
                    union[t.first : t.first + spread.numel()] |= spread
            for (name, side), union in unions.items():
                cut[name][side] = int(union.sum())
        total = self.dense
        for name, (flops, outputs, inputs) in self.shape.items():
            out_cut, in_cut = cut[name]
            if out_cut or in_cut:
                kept = max(0, outputs - out_cut) * max(0, inputs - in_cut)
                total -= flops - flops * kept // (outputs * inputs)
        return total
