"""Which units go: importance scores per unit, and a greedy choice that removes the least important until
the target fraction of the prunable parameters is gone.

``activation`` (Minitron): a KV group's mean |output| over its query heads, a channel's mean |activation|,
and a block's (or a sublayer's) ShortGPT influence, one minus the cosine between its input and output. ``taylor``
(LLM-Pruner): |w * grad| summed over the unit. Units of different kinds compete by importance per
parameter, each divided by its kind's mean so that a head's and a block's scores meet on one scale.
``uniform`` takes the same number of each width unit from every block (by importance within the block);
``global`` ranks all units together (``structured`` removes blocks only under ``global``; ``block``
always ranks globally). Every block keeps one KV group and one channel, the model one block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from prunehive.workers.structure.accounting import prunable_params
from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.stats import BlockStats, TaylorScores
from prunehive.workers.structure.units import DecoderStructure

UnitKind = Literal["group", "channel", "block"]
IMPORTANCES = ("activation", "taylor")
ALLOCATIONS = ("uniform", "global")
KINDS: dict[str, tuple[UnitKind, ...]] = {
    "head": ("group",),
    "channel": ("channel",),
    "block": ("block",),
    "structured": ("group", "channel", "block"),
}


@dataclass
class Scores:
    """Each block's unit importances (higher: more important)."""

    groups: dict[int, torch.Tensor] = field(default_factory=dict)
    channels: dict[int, torch.Tensor] = field(default_factory=dict)
    blocks: dict[int, float] = field(default_factory=dict)
    sublayers: dict[int, dict[str, float]] = field(default_factory=dict)  # block -> attention/mlp importance


def activation_scores(structure: DecoderStructure, stats: dict[int, BlockStats]) -> Scores:
    out = Scores()
    for b in structure.blocks:
        s = stats[b.index]
        out.blocks[b.index] = 1.0 - s.cos["block"]
        out.sublayers[b.index] = {"attention": 1.0 - s.cos["attention"], "mlp": 1.0 - s.cos["mlp"]}
        if b.attention and s.head_abs is not None:
            out.groups[b.index] = s.head_abs.reshape(b.kv_heads, -1).mean(1)
        if b.mlp and s.channel_abs is not None:
            out.channels[b.index] = s.channel_abs.clone()
    return out


def taylor_scores(scores: TaylorScores) -> Scores:
    return Scores(dict(scores.groups), dict(scores.channels), dict(scores.blocks), dict(scores.sublayers))


@dataclass(frozen=True)
class Unit:
    kind: UnitKind
    block: int
    index: int
    params: int
    key: tuple[float, float]  # ascending: removed first


def _units(structure: DecoderStructure, scores: Scores, kinds: tuple[UnitKind, ...], allocation: str) -> list[Unit]:
    raw: list[tuple[UnitKind, int, int, int, float, float]] = []  # kind, block, index, params, score, fraction
    for b in structure.blocks:
        if "block" in kinds:
            raw.append(("block", b.index, 0, b.block_params, scores.blocks[b.index], 0.0))
        for kind, table, params in (
            ("group", scores.groups, b.group_params),
            ("channel", scores.channels, b.channel_params),
        ):
            if kind not in kinds or b.index not in table:
                continue
            values = table[b.index].double()
            order = torch.argsort(values, stable=True).tolist()
            for rank, idx in enumerate(order[:-1]):  # the most important unit of each block stays
                raw.append((kind, b.index, int(idx), params, float(values[idx]), rank / len(order)))  # type: ignore[arg-type]
    means: dict[str, float] = {}
    for kind in kinds:
        dens = [s / p for k, _, _, p, s, _ in raw if k == kind and p]
        means[kind] = (sum(dens) / len(dens)) if dens and sum(dens) > 0 else 1.0
    units = []
    for kind, block, idx, params, score, fraction in raw:
        density = score / params / means[kind] if params else 0.0
        uniform = allocation == "uniform" and kind != "block"
        units.append(Unit(kind, block, idx, params, (fraction, density) if uniform else (density, fraction)))
    return sorted(units, key=lambda u: u.key)


def choose(
    structure: DecoderStructure, scores: Scores, granularity: str, sparsity: float, allocation: str = "global"
) -> StructurePlan:
    """The plan removing the least important units until ``sparsity`` of the prunable parameters is gone."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation {allocation!r} is not one of {', '.join(ALLOCATIONS)} for structured pruning")
    kinds = KINDS[granularity]
    if allocation == "uniform" and granularity == "structured":
        kinds = ("group", "channel")  # uniform width: every block keeps its place
    total = prunable_params(structure, granularity)
    units = _units(structure, scores, kinds, allocation)
    state = _Removal(structure)
    goal = sparsity * total
    # A block is a large unit: where width units can make up the rest, one that would overshoot the goal by
    # more than a width unit waits until every smaller unit has been considered.
    slack = max((u.params for u in units if u.kind != "block"), default=None)
    deferred = []
    for unit in units:
        if state.removed >= goal - 1e-9:
            break
        if unit.kind == "block" and slack is not None and state.removed + state.gain(unit) > goal + slack:
            deferred.append(unit)
            continue
        state.take(unit)
    for unit in deferred:
        if state.removed >= goal - 1e-9:
            break
        state.take(unit)
    removed = state.removed
    if removed < goal - 1e-9:
        most = removed / total if total else 0.0
        raise ValueError(
            f"sparsity {sparsity} removes more than {granularity} pruning can ({most:.4f} at most: every block keeps "
            "one KV group and one MLP channel, the model one block)"
        )
    return state.plan()


class _Removal:
    """The units taken so far, block by block, and the parameters they remove."""

    def __init__(self, structure: DecoderStructure) -> None:
        self.blocks = {b.index: b for b in structure.blocks}
        self.groups: dict[int, set[int]] = {i: set() for i in self.blocks}
        self.channels: dict[int, set[int]] = {i: set() for i in self.blocks}
        self.gone: set[int] = set()
        self.removed = 0

    def gain(self, unit: Unit) -> int:
        """Parameters ``unit`` would remove beyond those already gone (0 where it cannot be taken)."""
        if unit.block in self.gone:
            return 0
        if unit.kind != "block":
            return unit.params
        if len(self.gone) + 1 >= len(self.blocks):
            return 0
        b = self.blocks[unit.block]
        return (
            b.block_params - len(self.groups[b.index]) * b.group_params - len(self.channels[b.index]) * b.channel_params
        )

    def take(self, unit: Unit) -> None:
        gain = self.gain(unit)
        if gain == 0:
            return
        self.removed += gain
        if unit.kind == "block":
            self.gone.add(unit.block)
        else:
            (self.groups if unit.kind == "group" else self.channels)[unit.block].add(unit.index)

    def plan(self) -> StructurePlan:
        out = []
        for i, b in self.blocks.items():
            if i in self.gone:
                out.append(BlockPlan(attention=False, mlp=False))
                continue
            groups, channels = self.groups[i], self.channels[i]
            kept_g = tuple(g for g in range(b.kv_heads) if g not in groups) if groups else None
            kept_c = tuple(c for c in range(b.channels) if c not in channels) if channels else None
            out.append(BlockPlan(kv_groups=kept_g, channels=kept_c))
        return StructurePlan(tuple(out))
