"""Masks for any sparsity from rankings computed once per (layer, metric).

A ranking stores, for every weight, its position in the keep order of its comparison group
(the layer, a row, an N:M group, or an output channel). The mask for k pruned weights is then
one comparison, ``rank >= k``, so evaluating a new sparsity vector never re-scores anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from prunehive.workers.granularity import Granularity as Granularity  # parsed without torch; re-exported


def _rank_along_last(scores: torch.Tensor) -> torch.Tensor:
    """Position of each entry in ascending order along the last dim (0 = least important)."""
    order = torch.argsort(scores, dim=-1, stable=True)
    rank = torch.empty_like(order, dtype=torch.int32)
    positions = torch.arange(scores.shape[-1], dtype=torch.int32, device=scores.device).expand_as(order).contiguous()
    rank.scatter_(-1, order, positions)
    return rank


@dataclass
class Ranking:
    """One layer's precomputed order for one metric and granularity."""

    granularity: Granularity
    rank: torch.Tensor  # int32: shape of W (layer/row/nm) or (out_channels,) for channel
    shape: tuple[int, ...]
    _float_rank: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def build(cls, scores: torch.Tensor, granularity: Granularity) -> Ranking:
        shape = tuple(scores.shape)
        flat_rows = scores.reshape(shape[0], -1).double()
        if granularity.kind == "layer":
            rank = _rank_along_last(flat_rows.reshape(-1)).reshape(shape)
        elif granularity.kind == "row":
            rank = _rank_along_last(flat_rows).reshape(shape)
        elif granularity.kind == "nm":
            if not granularity.supports(shape):
                raise ValueError(f"a layer of shape {shape} cannot be split into groups of {granularity.m}")
            rank = _rank_along_last(flat_rows.reshape(shape[0], -1, granularity.m)).reshape(shape)
        else:
            rank = _rank_along_last(flat_rows.sum(dim=1))
        return cls(granularity, rank, shape)

    @property
    def numel(self) -> int:
        return int(self.rank.numel()) if self.granularity.kind != "channel" else self.shape[0]

    def pruned_count(self, sparsity: float) -> int:
        """Units removed for a requested sparsity (weights, or channels for ``channel``)."""
        g = self.granularity
        if g.kind == "nm":
            groups = self.rank.numel() // g.m
            return groups * (g.m - self.keep_per_group(sparsity))
        return min(self.numel, max(0, round(sparsity * self.numel)))

    def keep_per_group(self, sparsity: float) -> int:
        g = self.granularity
        return min(g.m, max(0, round((1.0 - sparsity) * g.m)))

    def pruned_weights(self, sparsity: float) -> int:
        """Weights removed for a requested sparsity: exact, as ranks are distinct within each group,
        so no mask needs to be built or counted."""
        k = self.pruned_count(sparsity)
        if self.granularity.kind == "channel":
            return k * (math.prod(self.shape) // self.shape[0])
        return k

    def _threshold(self, sparsity: float) -> int | torch.Tensor:
        """Keep a weight (or channel) iff its rank is at least this (a per-row column for ``row``)."""
        g = self.granularity
        if g.kind == "row":
            rows = self.shape[0]
            k = self.pruned_count(sparsity)
            per_row = torch.full((rows,), k // rows, dtype=torch.int32, device=self.rank.device)
            per_row[: k % rows] += 1  # spread the remainder so the layer total is exact
            return per_row.reshape([rows] + [1] * (len(self.shape) - 1))
        if g.kind == "nm":
            return g.m - self.keep_per_group(sparsity)
        return self.pruned_count(sparsity)

    def mask(self, sparsity: float) -> torch.Tensor:
        """Boolean keep-mask of W's shape with ``sparsity`` of the weights removed."""
        keep = self.rank >= self._threshold(sparsity)
        if self.granularity.kind == "channel":
            return keep.reshape([-1] + [1] * (len(self.shape) - 1)).expand(self.shape)
        return keep

    def keep_into(self, sparsity: float, out: torch.Tensor) -> torch.Tensor:
        """The keep-mask as 0/1 values of ``out``'s dtype, written into ``out`` (W's shape).

        Same values as :meth:`mask`; comparing straight into a float buffer and multiplying by it
        is several times faster on CPU than building a bool mask and multiplying by that.
        """
        if self.granularity.kind == "channel":
            return out.copy_(self.mask(sparsity))
        if self._float_rank is None:
            # float32 holds every integer up to 2**24 exactly, and float comparisons are the fast ones
            exact = self.rank.numel() <= 2**24
            self._float_rank = self.rank.to(torch.float32) if exact else self.rank
        return torch.ge(self._float_rank, self._threshold(sparsity), out=out)

    def removed_channels(self, sparsity: float) -> list[int]:
        """Output channels removed under ``channel`` granularity (lowest scores first)."""
        k = self.pruned_count(sparsity)
        return sorted(int(i) for i in torch.nonzero(self.rank < k).flatten())
