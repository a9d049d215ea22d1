"""What a StructurePlan removes, counted on the decoder's structure: parameters (of the physically smaller
model), each projection's removed fraction (the ``layers`` every prune result reports) and forward FLOPs."""

from __future__ import annotations

from collections.abc import Mapping

from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.units import ATTENTION, MLP, BlockUnits, DecoderStructure


def removed_groups(b: BlockUnits, p: BlockPlan) -> int:
    return 0 if p.kv_groups is None else b.kv_heads - len(p.kv_groups)


def removed_channels(b: BlockUnits, p: BlockPlan) -> int:
    return 0 if p.channels is None else b.channels - len(p.channels)


def block_removed_params(b: BlockUnits, p: BlockPlan) -> int:
    """Parameters the plan takes out of one block."""
    if p.removed:
        return b.block_params
    attention = b.attention_params if not p.attention else removed_groups(b, p) * b.group_params
    mlp = b.mlp_params if not p.mlp else removed_channels(b, p) * b.channel_params
    return attention + mlp


def prunable_params(structure: DecoderStructure, granularity: str) -> int:
    """What the sparsity S is a fraction of: the attention projections (``head``), the MLP projections
    (``channel``), or the whole decoder blocks (``block``, ``structured``)."""
    if granularity == "head":
        return sum(b.kv_heads * b.group_params for b in structure.blocks)
    if granularity == "channel":
        return sum(b.channels * b.channel_params for b in structure.blocks)
    return sum(b.block_params for b in structure.blocks)


def removed_params(structure: DecoderStructure, plan: StructurePlan) -> int:
    return sum(block_removed_params(b, p) for b, p in zip(structure.blocks, plan.blocks, strict=True))


def layer_fractions(structure: DecoderStructure, plan: StructurePlan) -> dict[str, float]:
    """Each projection's fraction of weights removed (a removed sublayer's are all removed)."""
    out: dict[str, float] = {}
    for b, p in zip(structure.blocks, plan.blocks, strict=True):
        if b.attention:
            heads = 1.0 if not p.attention else removed_groups(b, p) / b.kv_heads
            out.update({b.proj(n): heads for n in ATTENTION})
        if b.mlp:
            channels = 1.0 if not p.mlp else removed_channels(b, p) / b.channels
            out.update({b.proj(n): channels for n in MLP})
    return out


def plan_flops(structure: DecoderStructure, plan: StructurePlan, total: int, per_module: Mapping[str, int]) -> int:
    """Forward FLOPs of the physically smaller model: the dense count less each removed block or sublayer,
    and less the removed share of each projection and of the attention's own score and value products."""
    removed = 0.0
    fractions = layer_fractions(structure, plan)
    for b, p in zip(structure.blocks, plan.blocks, strict=True):
        if p.removed:
            removed += per_module.get(b.path, 0)
            continue
        if b.attention:
            share = fractions[b.proj("q_proj")]
            removed += share * per_module.get(b.attention, 0)  # projections and attention products scale alike
        if b.mlp:
            removed += fractions[b.proj("gate_proj")] * per_module.get(b.mlp, 0)
    return int(round(total - removed))
