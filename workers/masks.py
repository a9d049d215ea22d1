"""Keep-masks for any sparsity: from a compact rank where one is cheap, else selected on the fly.

A weight's rank is its position in the keep order of its comparison group (the layer, a row, an N:M
group or an output channel), ties broken by position as a stable sort breaks them; the mask for k
pruned weights is ``rank >= k``. A rank is stored only when it takes at most half of its weight's
bytes (groups of up to 256 in one byte, up to 65,536 in two): then a new sparsity costs one
comparison. Bigger groups keep no rank at all; their scores are recomputed and the k-th smallest is
found with ``kthvalue``, the same mask for a pass over the layer (their forward passes dwarf it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from prunehive.workers.allocator import release_freed
from prunehive.workers.granularity import Granularity as Granularity  # parsed without torch; re-exported

Scores = Callable[[], torch.Tensor]
_OFFSET = {torch.uint8: 0, torch.int16: -32768}  # an int16 rank is stored shifted, to hold 0..65535


def _rank_along_last(scores: torch.Tensor) -> torch.Tensor:
    """Position of each entry in ascending order along the last dim (0 = least important)."""
    order = torch.argsort(scores, dim=-1, stable=True)
    rank = torch.empty_like(order, dtype=torch.int32)
    positions = torch.arange(scores.shape[-1], dtype=torch.int32, device=scores.device).expand_as(order).contiguous()
    rank.scatter_(-1, order, positions)
    return rank


@dataclass(frozen=True)
class Cut:
    """Where each row of a layer's scores is cut: prune the scores below ``value``, and of those equal to
    it the ones before position ``first_kept`` (ties go by position, as a stable sort orders them)."""

    value: torch.Tensor  # (rows, 1), the scores' dtype
    first_kept: torch.Tensor | None  # (rows, 1) positions; None when no row splits its ties

    @classmethod
    def find(cls, scores: torch.Tensor, pruned: torch.Tensor) -> Cut:
        """The cut pruning ``pruned[r]`` scores of row r (``scores`` 2-D): kthvalue, and ties if any."""
        rows, cols = scores.shape
        value = torch.full((rows, 1), -math.inf, dtype=scores.dtype, device=scores.device)  # k = 0: keep all
        first = torch.zeros((rows, 1), dtype=torch.int64, device=scores.device)
        split = False
        for k in sorted({int(k) for k in pruned.tolist()} - {0}):  # at most two distinct counts
            every = bool((pruned == k).all())
            rows_k = None if every else (pruned == k).nonzero().flatten().to(scores.device)
            block = scores if rows_k is None else scores.index_select(0, rows_k)
            v = torch.kthvalue(block, k, dim=1, keepdim=True).values
            eq = block == v
            need = k - (block < v).sum(1, keepdim=True)  # ties to prune in each row
            split_rows = eq.sum(1, keepdim=True) > need
            if bool(split_rows.any()):
                split = True
                pos = ((eq.cumsum(1) > need) & eq).int().argmax(1, keepdim=True)  # the first tie kept
                at = torch.where(split_rows, pos, cols)
            else:
                at = torch.full_like(need, cols)
            if rows_k is None:
                value, first = v, at
            else:
                value[rows_k], first[rows_k] = v, at
        return cls(value, first if split else None)

    def keep(self, scores: torch.Tensor) -> torch.Tensor:
        """The bool keep-mask of ``scores`` (2-D, the rows the cut was found on)."""
        return self._mark(scores, scores > self.value)

    def keep_into(self, scores: torch.Tensor) -> torch.Tensor:
        """The keep-mask as 0/1 values written over ``scores`` itself: no second tensor of its size."""
        at, ties = self._ties(scores)
        torch.gt(scores, self.value, out=scores)
        if ties is not None:
            scores[:, at:].masked_fill_(ties, 1)
        return scores

    def _mark(self, scores: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        at, ties = self._ties(scores)
        if ties is not None:
            keep[:, at:] |= ties
        return keep

    def _ties(self, scores: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        """The kept ties, from column ``at`` on (a whole layer as one row: sliced, not compared)."""
        if self.first_kept is None:
            return 0, None
        if scores.shape[0] == 1:
            at = int(self.first_kept)
            return at, scores[:, at:] == self.value
        positions = torch.arange(scores.shape[1], device=scores.device)
        return 0, (scores == self.value) & (positions >= self.first_kept)


@dataclass
class Ranking:
    """One layer's keep order for one metric and granularity: a compact rank, or its scores' source."""

    granularity: Granularity
    shape: tuple[int, ...]
    scores: Scores  # recomputes the layer's scores (the weight's shape)
    stored: torch.Tensor | None  # compact rank: W's shape, or (out_channels,) int32 for channel
    fresh: bool = False  # ``scores`` returns a new tensor each call, which pruning may overwrite

    @classmethod
    def build(cls, scores: torch.Tensor | Scores, granularity: Granularity, itemsize: int = 4) -> Ranking:
        """``scores``, or a function computing them afresh (the engine's: then pruning may write into what it
        returns); ``itemsize``: bytes per weight (what a rank may cost)."""
        source: Scores = scores if callable(scores) else (lambda s=scores: s)  # type: ignore[misc]
        now = source()
        shape = tuple(now.shape)
        if granularity.kind == "nm" and not granularity.supports(shape):
            raise ValueError(f"a layer of shape {shape} cannot be split into groups of {granularity.m}")
        ranking = cls(granularity, shape, source, None, fresh=callable(scores))
        if granularity.kind == "channel":
            ranking.stored = _rank_along_last(now.reshape(shape[0], -1).double().sum(dim=1))
            return ranking
        group = ranking.group_size
        dtype = torch.uint8 if group <= 256 else torch.int16 if group <= 65536 else None
        if dtype is not None and 2 * dtype.itemsize <= itemsize:
            rank = ranking._full_rank(now)
            ranking.stored = (rank + _OFFSET[dtype]).to(dtype) if dtype is torch.int16 else rank.to(dtype)
        return ranking

    @property
    def group_size(self) -> int:
        g = self.granularity
        return {"layer": self.numel, "row": self.numel // self.shape[0], "nm": g.m}.get(g.kind, self.shape[0])

    @functools.cached_property
    def numel(self) -> int:
        return math.prod(self.shape) if self.granularity.kind != "channel" else self.shape[0]

    @property
    def rank(self) -> torch.Tensor:
        """The int32 rank (computed now when none is stored)."""
        if self.stored is None:
            return self._full_rank(self.scores())
        return self.stored.to(torch.int32) - _OFFSET.get(self.stored.dtype, 0)

    def _full_rank(self, scores: torch.Tensor) -> torch.Tensor:
        g, shape = self.granularity, self.shape
        rows = scores.reshape(shape[0], -1).double()
        if g.kind == "layer":
            return _rank_along_last(rows.reshape(-1)).reshape(shape)
        if g.kind == "nm":
            return _rank_along_last(rows.reshape(shape[0], -1, g.m)).reshape(shape)
        if g.kind == "channel":
            return _rank_along_last(rows.sum(dim=1))
        return _rank_along_last(rows).reshape(shape)

    def pruned_count(self, sparsity: float) -> int:
        """Units removed for a requested sparsity (weights, or channels for ``channel``)."""
        g = self.granularity
        if g.kind == "nm":
            return self.numel // g.m * (g.m - self.keep_per_group(sparsity))
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

    def _per_row(self, sparsity: float) -> torch.Tensor:
        """Weights pruned in each row under ``row``: the layer total spread evenly, remainder first."""
        rows, k = self.shape[0], self.pruned_count(sparsity)
        per_row = torch.full((rows,), k // rows, dtype=torch.int32)
        per_row[: k % rows] += 1
        return per_row

    def _threshold(self, sparsity: float) -> int | torch.Tensor:
        """Keep a weight (or channel) iff its int32 rank is at least this (a per-row column for ``row``)."""
        g = self.granularity
        if g.kind == "row":
            return self._per_row(sparsity).reshape([self.shape[0]] + [1] * (len(self.shape) - 1))
        if g.kind == "nm":
            return g.m - self.keep_per_group(sparsity)
        return self.pruned_count(sparsity)

    def _stored_threshold(self, sparsity: float) -> int | torch.Tensor | None:
        """The threshold shifted as the stored rank is; None when it does not fit the stored type (a
        whole group pruned: rare, compared in int32 instead)."""
        assert self.stored is not None
        threshold = self._threshold(sparsity)
        top = 255 if self.stored.dtype is torch.uint8 else 65535  # the largest rank a stored type holds
        if int(threshold.max() if isinstance(threshold, torch.Tensor) else threshold) > top:
            return None
        offset = _OFFSET.get(self.stored.dtype, 0)
        if isinstance(threshold, torch.Tensor):
            return (threshold + offset).to(self.stored.dtype).to(self.stored.device)
        return threshold + offset

    def _compare(self, sparsity: float) -> torch.Tensor:
        """``rank >= threshold`` on the stored rank."""
        assert self.stored is not None
        threshold = self._stored_threshold(sparsity)
        if threshold is None:  # a whole group pruned: compared in int32
            full = self._threshold(sparsity)
            return self.rank >= (full.to(self.stored.device) if isinstance(full, torch.Tensor) else full)
        return self.stored >= threshold

    def mask(self, sparsity: float) -> torch.Tensor:
        """Boolean keep-mask of W's shape with ``sparsity`` of the weights removed."""
        g = self.granularity
        if g.kind == "channel":
            keep = self.channels_kept(sparsity)
            return keep.reshape([-1] + [1] * (len(self.shape) - 1)).expand(self.shape)
        if self.stored is not None:
            return self._compare(sparsity)
        scores = self.scores()
        if g.kind == "nm":
            return self._full_rank(scores) >= self._threshold(sparsity)
        rows = self._rows(scores)
        return self.cut(sparsity, rows).keep(rows).reshape(self.shape)

    def _rows(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores as the rows a cut is found on: the layer as one row, or the weight's rows."""
        return scores.reshape(1, -1) if self.granularity.kind == "layer" else scores.reshape(self.shape[0], -1)

    def cut(self, sparsity: float, rows: torch.Tensor | None = None) -> Cut:
        """``layer`` and ``row`` without a stored rank: where to cut for ``sparsity``."""
        rows = self._rows(self.scores()) if rows is None else rows
        if self.granularity.kind == "row":
            return Cut.find(rows, self._per_row(sparsity))
        return Cut.find(rows, torch.tensor([self.pruned_count(sparsity)]))

    def channels_kept(self, sparsity: float) -> torch.Tensor:
        """``channel``: the (out_channels,) keep-mask."""
        assert self.stored is not None
        return self.stored >= self.pruned_count(sparsity)

    def pruner(self, sparsity: float) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function giving ``dense x keep-mask`` for ``sparsity``, the selection done now, once.

        With a stored rank it compares straight into a buffer of the weight's dtype and multiplies by
        that (several times faster on CPU than through a bool mask), so no mask is kept between calls;
        otherwise the bool mask is built now and kept until the function goes.
        """
        stored = self.stored
        threshold = None if stored is None or self.granularity.kind == "channel" else self._stored_threshold(sparsity)
        if stored is not None and threshold is not None:
            return lambda dense: torch.ge(stored, threshold, out=torch.empty_like(dense)).mul_(dense)
        if stored is None and self.granularity.kind in ("layer", "row"):
            cut = self.cut(sparsity)  # kthvalue once per candidate; the scores again at every call
            release_freed()

            def prune(dense: torch.Tensor) -> torch.Tensor:
                scores = self.scores()  # a fresh tensor: the keep-mask and then the weights go into it
                rows = self._rows(scores)
                reuse = self.fresh and scores.dtype == dense.dtype and scores.is_contiguous()
                if not reuse or scores.data_ptr() == dense.data_ptr():
                    return dense * cut.keep(rows).reshape(dense.shape)
                return cut.keep_into(rows).view(dense.shape).mul_(dense)

            return prune
        mask = self.mask(sparsity)
        return lambda dense: dense * mask

    def removed_channels(self, sparsity: float) -> list[int]:
        """Output channels removed under ``channel`` granularity (lowest scores first)."""
        return sorted(int(i) for i in torch.nonzero(~self.channels_kept(sparsity)).flatten())
