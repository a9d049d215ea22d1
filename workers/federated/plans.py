"""Pruning plans: which masks each client tier trains under, round by round.

Masks come from the workers' pruning stack: one ``Ranking`` per layer (by aggregated importance,
at the job's granularity) serves every tier, and a tier keeps the top ``1 - sparsity`` of it, so
the most-pruned tier's mask is a sub-network of every other tier's. Per-layer sparsities come from
the same heuristics as searches' baselines. The progressive ramp is cubic (Zhu & Gupta, 2017): most
of the pruning happens early, when the model can still recover, and the uplink shrinks after a few
rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from prunehive.search.space import SearchSpace
from prunehive.workers.apply import with_biases
from prunehive.workers.baselines import heuristic_allocation
from prunehive.workers.calibration import LayerStats
from prunehive.workers.masks import Granularity, Ranking

# Named algorithms, each a strategy (and where it needs one a client action) in workers/federated/plan_<name>.py.
NAMED_PLANS = ("fedtiny", "hidenseek", "feddst", "prunefl", "autoflip")
TierMasks = dict[str, torch.Tensor]  # parameter name ("fc1.weight", and "fc1.bias" for channels) -> bool mask
UNSTRUCTURED = Granularity("layer")


def ramp(round_: int, target: float, ramp_rounds: int) -> float:
    """Sparsity of the masks used in ``round_`` (1-based): 0 in round 1, ``target`` from ``ramp_rounds + 1``."""
    progress = min(max(round_ - 1, 0), ramp_rounds) / max(ramp_rounds, 1)
    return target * (1.0 - (1.0 - progress) ** 3)


def stand_in_stats(score: torch.Tensor) -> LayerStats:
    """Statistics for a layer known only by its scores (no client sent any): the scores stand in for W."""
    one, zero = torch.ones(()).expand_as(score), torch.zeros(()).expand_as(score)
    return LayerStats(W=score, X=one, G=zero, F=zero)


def layer_sparsities(
    space: SearchSpace,
    target: float,
    allocation: str | Mapping[str, float],
    scores: Mapping[str, torch.Tensor],
    stats: Mapping[str, LayerStats] | None = None,
    granularity: Granularity = UNSTRUCTURED,
) -> dict[str, float]:
    """Per-layer sparsity (by layer name) for a global ``target``: a heuristic or explicit numbers.

    ``scores`` are by weight name, ``stats`` (what OWL and structured Global MP read) by layer name.
    """
    if target <= 0.0:
        return {n: 0.0 for n in space.names}
    if not isinstance(allocation, str):
        unknown = set(allocation) - set(space.names)
        if unknown:
            raise ValueError(f"pruning.allocation: unknown layers {sorted(unknown)}; layers are {space.names}")
        return {n: float(allocation.get(n, 0.0)) for n in space.names}

    def layer_stats(name: str) -> LayerStats:
        return stats[name] if stats is not None else stand_in_stats(scores[f"{name}.weight"])

    vector = heuristic_allocation(
        allocation, space.with_target(target), granularity, layer_stats, lambda n: scores[f"{n}.weight"]
    )
    return {n: float(v) for n, v in zip(space.names, np.asarray(vector), strict=True)}


def nested_masks(
    scores: Mapping[str, torch.Tensor], tiers: list[dict[str, float]], granularity: Granularity = UNSTRUCTURED
) -> list[TierMasks]:
    """One mask set per tier from one ranking per tensor; tiers must go from least to most sparse.

    A tier never prunes less of a tensor than the tier before it, so the masks are nested even when
    an allocation's per-layer numbers are not monotone across tiers.
    """
    out: list[TierMasks] = [{} for _ in tiers]
    for name, score in scores.items():
        ranking = Ranking.build(score, granularity)
        previous = 0.0
        for t, sparsity in enumerate(tiers):
            previous = max(previous, sparsity[name])
            out[t][name] = ranking.mask(previous).contiguous()
    return out


@dataclass
class MaskPlan:
    """``fixed``, ``progressive``, ``heterogeneous`` or ``dense`` (FedAvg, no masks)."""

    kind: str
    targets: list[float]  # one per tier, ascending (a single one except for heterogeneous)
    space: SearchSpace
    allocation: str | Mapping[str, float] = "uniform"
    ramp_rounds: int = 1
    granularity: Granularity = UNSTRUCTURED

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

    def masks(
        self, round_: int, scores: Mapping[str, torch.Tensor], stats: Mapping[str, LayerStats] | None = None
    ) -> list[TierMasks] | None:
        """Each tier's weight masks for ``round_`` from aggregated ``scores`` (by weight name) and, where
        the allocation reads them, the layers' ``stats`` (by layer name); None while dense."""
        targets = self.sparsity_at(round_)
        if max(targets) <= 0.0:
            return None
        per_tier = []
        for target in targets:
            by_layer = layer_sparsities(self.space, target, self.allocation, scores, stats, self.granularity)
            per_tier.append({f"{n}.weight": s for n, s in by_layer.items()})
        weights = {f"{n}.weight": scores[f"{n}.weight"] for n in self.space.names}
        return nested_masks(weights, per_tier, self.granularity)


def with_bias_masks(tiers: list[TierMasks], biases: set[str]) -> list[TierMasks]:
    """Channel masks also drop the removed channels' biases (named in ``biases``), by the rule every
    candidate is applied with (``workers/apply.py:output_keep``)."""
    return [with_biases(masks, biases) for masks in tiers]


def named_plan_module(name: str) -> str:
    """The module of a named plan (``NAMED_PLANS``); importing it registers its client actions."""
    return f"prunehive.workers.federated.plan_{name}"


def masked_sparsity(masks: Mapping[str, torch.Tensor], total: int) -> float:
    """Fraction of ``total`` prunable weights that ``masks`` removes."""
    removed = sum(int(m.numel() - m.sum()) for m in masks.values())
    return removed / max(total, 1)
