"""What one client's local training costs: FLOPs and peak memory, measured on a real training step.

FLOPs: torch's ``FlopCounterMode`` counts one forward and backward pass on one of the client's
batches, per module; each pruned layer's count is scaled by the fraction of its weights the mask
keeps (what a sparse kernel executes; PyTorch itself multiplies the zeros too), and the step's
total is multiplied by the number of local steps.

Peak memory: the activations autograd saves for that batch (measured with saved-tensor hooks) plus
the trainable state in sparse storage: each kept weight held ``state_copies`` times in float32
(weight, gradient and AdamW's two moments by default), every other parameter likewise, and one bit
per prunable weight for its mask; a frozen parameter is held once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from prunehive.workers.tasks.base import Batch

ADAMW_COPIES = 4  # weight, gradient, exp_avg, exp_avg_sq


@dataclass(frozen=True)
class TrainingCost:
    flops: float  # all local steps
    peak_bytes: int

    def metrics(self) -> dict[str, float]:
        """The reply's metric entries (the server sums FLOPs and takes the largest peak)."""
        return {"train-flops": float(self.flops), "peak-bytes": float(self.peak_bytes)}


def kept_fraction(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """By module name: the fraction of its weight that ``masks`` keeps."""
    return {n.removesuffix(".weight"): float(m.float().mean()) for n, m in masks.items() if n.endswith(".weight")}


def step_flops(model: nn.Module, loss: Callable[[nn.Module, Batch], torch.Tensor], batch: Batch) -> dict[str, int]:
    """FLOPs of one forward and backward pass, by module path ("" for what no submodule claims)."""
    with FlopCounterMode(display=False) as counter:
        loss(model, batch).backward()
    per_module: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key != "Global":
            per_module[key.partition(".")[2]] = int(sum(ops.values()))
    per_module[""] = int(counter.get_total_flops())
    return per_module


def saved_activation_bytes(model: nn.Module, loss: Callable[[nn.Module, Batch], torch.Tensor], batch: Batch) -> int:
    """Bytes of the tensors autograd keeps for the backward pass (parameters excluded)."""
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        value = loss(model, batch)
    value.backward()
    return sum(seen.values())


def training_cost(
    model: nn.Module,
    loss: Callable[[nn.Module, Batch], torch.Tensor],
    batch: Batch,
    masks: Mapping[str, torch.Tensor],
    steps: int,
    state_copies: int = ADAMW_COPIES,
) -> TrainingCost:
    """Measure one step on a copy of ``model`` (its BatchNorm statistics stay untouched)."""
    probe = copy.deepcopy(model).train()
    kept = kept_fraction(masks)
    counts = step_flops(probe, loss, batch)
    total = counts.pop("")
    # Leaf modules only (a container's count includes its children's); the rest stays dense.
    leaves = {n for n, m in probe.named_modules() if not list(m.children())}
    saved = sum(c * (1.0 - kept[n]) for n, c in counts.items() if n in leaves and n in kept)
    probe.zero_grad(set_to_none=True)
    activations = saved_activation_bytes(probe, loss, batch)
    state = 0.0
    for name, p in probe.named_parameters():
        mask = masks.get(name)
        held = p.numel() if mask is None else int(mask.sum())
        copies = state_copies if p.requires_grad else 1  # a frozen tensor has no gradient or optimizer state
        state += held * copies * p.element_size() + (0 if mask is None else p.numel() / 8)
    return TrainingCost(flops=(total - saved) * steps, peak_bytes=int(activations + state))


def plain_loss(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """A task's loss on a model and a batch, the form ``training_cost`` takes."""

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        return loss_fn(model(batch[0]), batch[1])

    return loss
