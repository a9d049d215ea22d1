"""Pruning plans: which masks each client tier trains under, round by round.

One ranking per layer (by aggregated importance) serves every tier: a tier keeps the top
``1 - sparsity`` of it, so the most-pruned tier's mask is a sub-network of every other tier's.
The progressive ramp is cubic (Zhu & Gupta, 2017): most of the pruning happens early, when the
model can still recover, and the uplink shrinks after a few rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from prunehive.search.allocations import allocate, outlier_ratio
from prunehive.search.space import SearchSpace

TierMasks = dict[str, torch.Tensor]  # parameter name ("fc1.weight") -> bool mask


def ramp(round_: int, target: float, ramp_rounds: int) -> float:
    """Sparsity of the masks used in ``round_`` (1-based): 0 in round 1, ``target`` from ``ramp_rounds + 1``."""
    progress = min(max(round_ - 1, 0), ramp_rounds) / max(ramp_rounds, 1)
    return target * (1.0 - (1.0 - progress) ** 3)


def layer_sparsities(
    space: SearchSpace, target: float, allocation: str | Mapping[str, float], scores: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """Per-layer sparsity (by layer name) for a global ``target``: a heuristic or explicit numbers."""
    if target <= 0.0:
        return {n: 0.0 for n in space.names}
    if not isinstance(allocation, str):
        unknown = set(allocation) - set(space.names)
        if unknown:
            raise ValueError(f"pruning.allocation: unknown layers {sorted(unknown)}; layers are {space.names}")
        return {n: float(allocation.get(n, 0.0)) for n in space.names}
    sub = space.with_target(target)
    flat = [scores[f"{n}.weight"].double().flatten().numpy() for n in space.names]
    if allocation == "global":
        vector = allocate("global", sub, scores=flat)
    elif allocation == "owl":
        vector = allocate("owl", sub, outlier_ratios=[outlier_ratio(s) for s in flat])
    else:
        vector = allocate(allocation, sub)
    return {n: float(v) for n, v in zip(space.names, np.asarray(vector), strict=True)}


def nested_masks(scores: Mapping[str, torch.Tensor], tiers: list[dict[str, float]]) -> list[TierMasks]:
    """One mask set per tier from one ranking per tensor; tiers must go from least to most sparse.

    A tier never keeps more of a tensor than the tier before it, so the masks are nested even when
    an allocation's per-layer numbers are not monotone across tiers.
    """
    out: list[TierMasks] = [{} for _ in tiers]
    for name, score in scores.items():
        n = score.numel()
        order = torch.argsort(score.flatten().double(), descending=True, stable=True)
        previous = n
        for t, sparsity in enumerate(tiers):
            keep = min(previous, max(1, n - round(sparsity[name] * n)))
            mask = torch.zeros(n, dtype=torch.bool)
            mask[order[:keep]] = True
            out[t][name] = mask.reshape(score.shape)
            previous = keep
    return out


@dataclass
class MaskPlan:
    """``fixed``, ``progressive``, ``heterogeneous`` or ``dense`` (FedAvg, no masks)."""

    kind: str
    targets: list[float]  # one per tier, ascending (a single one except for heterogeneous)
    space: SearchSpace
    allocation: str | Mapping[str, float] = "uniform"
    ramp_rounds: int = 1

    @property
    def tiers(self) -> int:
        return len(self.targets)

    def sparsity_at(self, round_: int) -> list[float]:
        if self.kind == "dense":
            return [0.0] * self.tiers
        if self.kind == "fixed":
            return list(self.targets)
        return [ramp(round_, t, self.ramp_rounds) for t in self.targets]

    def changes_at(self, round_: int) -> bool:
        """Whether the masks for ``round_`` differ from the last round's (so the server re-derives them)."""
        if self.kind == "dense":
            return False
        if self.kind == "fixed":
            return round_ == 1
        return 1 < round_ <= self.ramp_rounds + 1

    def masks(self, round_: int, scores: Mapping[str, torch.Tensor]) -> list[TierMasks] | None:
        """Each tier's masks for ``round_`` from aggregated ``scores`` (by weight name); None while dense."""
        targets = self.sparsity_at(round_)
        if max(targets) <= 0.0:
            return None
        per_tier = []
        for target in targets:
            by_layer = layer_sparsities(self.space, target, self.allocation, scores)
            per_tier.append({f"{n}.weight": s for n, s in by_layer.items()})
        return nested_masks({f"{n}.weight": scores[f"{n}.weight"] for n in self.space.names}, per_tier)


def masked_sparsity(masks: Mapping[str, torch.Tensor], total: int) -> float:
    """Fraction of ``total`` prunable weights that ``masks`` removes."""
    removed = sum(int(m.numel() - m.sum()) for m in masks.values())
    return removed / max(total, 1)
