"""A StructurePlan applied to the live model without reshaping it, and put back exactly afterwards.

Removed KV groups and channels become zeros in full-shaped weights (their query/key/value rows, gate/up
rows and biases, and their columns of the consumer, which reconstruction may refit): the same function
as the physically smaller model. A removed sublayer's forward hook returns zeros, so its residual branch
adds nothing; a removed block's forward hook returns the block's input, so the model computes exactly as
if the block were not there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.reconstruct import keep_columns
from prunehive.workers.structure.units import BlockUnits, DecoderStructure


def removed_groups(b: BlockUnits, p: BlockPlan) -> list[int]:
    return [] if p.kv_groups is None else [g for g in range(b.kv_heads) if g not in set(p.kv_groups)]


def removed_channels(b: BlockUnits, p: BlockPlan) -> list[int]:
    return [] if p.channels is None else [c for c in range(b.channels) if c not in set(p.channels)]


def o_keep(b: BlockUnits, p: BlockPlan) -> torch.Tensor:
    """The kept input columns of ``o_proj``: every query head of each kept KV group."""
    return keep_columns(b.heads * b.head_dim, removed_groups(b, p), b.group_size * b.head_dim)


def down_keep(b: BlockUnits, p: BlockPlan) -> torch.Tensor:
    return keep_columns(b.channels, removed_channels(b, p))


def _rows_zeroed(t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (t.dim() - 1)
    return t * keep.to(t.dtype).reshape(shape)


def plan_weights(
    model: nn.Module,
    structure: DecoderStructure,
    plan: StructurePlan,
    consumers: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Every parameter the plan's width removal changes, by name, full-shaped: producers' removed rows
    zeroed, and each consumer (``o_proj``/``down_proj`` weight) from ``consumers`` where reconstructed,
    else with its removed columns zeroed."""
    params = dict(model.named_parameters())
    consumers = consumers or {}
    out: dict[str, torch.Tensor] = {}
    for b, p in zip(structure.blocks, plan.blocks, strict=True):
        if p.removed:
            continue
        if b.attention and p.attention and removed_groups(b, p):
            cols = o_keep(b, p)
            kv = keep_columns(b.kv_heads * b.head_dim, removed_groups(b, p), b.head_dim)
            for name, keep in (("q_proj", cols), ("k_proj", kv), ("v_proj", kv)):
                for kind in ("weight", "bias"):
                    key = f"{b.proj(name)}.{kind}"
                    if key in params:
                        out[key] = _rows_zeroed(params[key].detach(), keep)
            key = f"{b.proj('o_proj')}.weight"
            out[key] = consumers.get(key, params[key].detach() * cols.to(params[key].dtype))
        if b.mlp and p.mlp and removed_channels(b, p):
            keep = down_keep(b, p)
            for name in ("gate_proj", "up_proj"):
                for kind in ("weight", "bias"):
                    key = f"{b.proj(name)}.{kind}"
                    if key in params:
                        out[key] = _rows_zeroed(params[key].detach(), keep)
            key = f"{b.proj('down_proj')}.weight"
            out[key] = consumers.get(key, params[key].detach() * keep.to(params[key].dtype))
    return out


def _skip_block(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    hidden = args[0] if args else kwargs["hidden_states"]
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _zero_branch(_m: nn.Module, _args: Any, output: Any) -> Any:
    if isinstance(output, tuple):
        return (torch.zeros_like(output[0]), *output[1:])
    return torch.zeros_like(output)


def plan_hooks(model: nn.Module, structure: DecoderStructure, plan: StructurePlan) -> list[RemovableHandle]:
    """Forward hooks that skip the plan's removed blocks and silence its removed sublayers."""
    modules = dict(model.named_modules())
    handles = []
    for b, p in zip(structure.blocks, plan.blocks, strict=True):
        if p.removed:
            handles.append(modules[b.path].register_forward_hook(_skip_block, with_kwargs=True))
            continue
        if not p.attention and b.attention:
            handles.append(modules[b.attention].register_forward_hook(_zero_branch))
        if not p.mlp and b.mlp:
            handles.append(modules[b.mlp].register_forward_hook(_zero_branch))
    return handles


@contextlib.contextmanager
def applied(
    model: nn.Module,
    structure: DecoderStructure,
    plan: StructurePlan,
    weights: Mapping[str, torch.Tensor] | None = None,
) -> Iterator[nn.Module]:
    """``model`` computing as the plan's smaller model while the block runs (``weights`` from
    ``plan_weights``; default: plain removal); its own tensors come back unchanged afterwards."""
    params = dict(model.named_parameters())
    chosen = plan_weights(model, structure, plan) if weights is None else weights
    swapped: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles: list[RemovableHandle] = []
    try:
        for name, tensor in chosen.items():
            swapped.append((params[name], params[name].data))
            params[name].data = tensor
        handles = plan_hooks(model, structure, plan)
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for param, tensor in reversed(swapped):
            param.data = tensor
