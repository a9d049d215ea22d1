"""SparseGPT: prune a layer and update its remaining weights to compensate (optimal brain surgeon).

For a layer with weight W (rows x columns) and calibration inputs X, the Hessian of the reconstruction
error ||WX - ŴX||² is H = XXᵀ. With the upper Cholesky factor U of H⁻¹ (after 1% damping), columns are
processed left to right in blocks of 128: a pruned weight's error is spread over the columns to its
right in proportion to U's row, so the layer's outputs on the calibration data change as little as
possible. H⁻¹ does not depend on the sparsity, so one ``ObsLayer`` prunes at any number of levels.

Which weights go is chosen block by block on the current (already updated) weights: by SparseGPT's own
saliency w² / [H⁻¹]²ⱼⱼ when the metric is ``magnitude`` (the OBS form of magnitude; it equals magnitude
when H = I), or by any other metric of W and X (Wanda's |W|·‖X‖, ``expr:`` formulas of W and X), which
gives "a Wanda mask with SparseGPT's update". Metrics reading gradients have none to read here.

Inputs that were always zero (dead ReLU units, constant pixels: a zero Hessian diagonal) carry no signal,
so their weights are pruned first and for free, counted among the pruned ones (as the reference's
``W[:, dead] = 0``), all of them even where that exceeds the sparsity asked for (above zero). The damping
is a fraction of the mean diagonal taken before dead inputs get one, so it scales with the activations
and the mask does not depend on their scale.
"""

from __future__ import annotations

import torch
from torch import nn

from prunehive.workers.calibration import LayerStats
from prunehive.workers.masks import Granularity
from prunehive.workers.metrics import get_metric, statistics_read

OBS_METRIC = "magnitude"  # under the sparsegpt solver: SparseGPT's own saliency


def check_solver_metric(metric: str) -> None:
    """A metric the solver can rank by: one of W and X only (the solver holds no gradients)."""
    if metric != OBS_METRIC and statistics_read(metric) & {"G", "F"}:
        raise ValueError(f"metric {metric!r} reads gradients; the sparsegpt solver ranks by W and X only")


class Hessian:
    """Running XXᵀ of a layer's inputs (Conv2d inputs unfolded into the columns its weight multiplies)."""

    def __init__(self, module: nn.Linear | nn.Conv2d) -> None:
        if isinstance(module, nn.Conv2d) and (module.groups != 1 or isinstance(module.padding, str)):
            raise ValueError("the sparsegpt solver supports Conv2d with groups=1 and numeric padding only")
        self.module = module
        cols = module.weight[0].numel()
        self.sum = torch.zeros(cols, cols, dtype=torch.float32, device=module.weight.device)
        self.count = 0

    def columns(self, inp: torch.Tensor) -> torch.Tensor:
        """The input as (samples, columns), matching ``weight.flatten(1)``."""
        m = self.module
        if isinstance(m, nn.Conv2d):
            cols = nn.functional.unfold(inp, m.kernel_size, m.dilation, m.padding, m.stride)  # type: ignore[arg-type]
            return cols.transpose(1, 2).reshape(-1, cols.shape[1])
        return inp.reshape(-1, inp.shape[-1])

    def add(self, inp: torch.Tensor) -> None:
        x = self.columns(inp.detach()).float()
        self.sum.addmm_(x.t(), x)
        self.count += x.shape[0]

    def mean(self) -> torch.Tensor:
        return self.sum / max(self.count, 1)


class ObsLayer:
    """One layer's dense weight and the Cholesky factor of its damped inverse Hessian, ready to prune."""

    def __init__(
        self, weight: torch.Tensor, hessian: torch.Tensor, damping: float = 0.01, blocksize: int = 128
    ) -> None:
        self.shape = weight.shape
        self.dtype = weight.dtype
        self.dense = weight.detach().flatten(1).float()
        self.blocksize = blocksize
        h = hessian.clone().float()
        self.dead = torch.diag(h) == 0  # inputs that were always zero: their weights are pruned for free
        self.x_norm = torch.diag(h).sqrt()  # 0 at dead inputs: they score lowest under Wanda-style metrics
        self.hinv = _inverse_cholesky(h, self.dead, damping)

    def prune(self, sparsity: float, granularity: Granularity, metric: str = OBS_METRIC) -> torch.Tensor:
        """The weight with ``sparsity`` of it removed and the rest updated, in the dense weight's shape and dtype."""
        if granularity.kind == "channel":
            raise ValueError("the sparsegpt solver supports unstructured and N:M granularities, not channel")
        if sparsity <= 0.0:
            return self.dense.reshape(self.shape).to(self.dtype)
        w = self.dense.clone()
        w[:, self.dead] = 0.0  # no live input's update reaches them (their H⁻¹ rows are zero off the diagonal)
        rows, cols = w.shape
        score = _saliency(metric)
        dead = self.dead.tolist()  # read on the host: no device sync per group
        for i1 in range(0, cols, self.blocksize):
            i2 = min(i1 + self.blocksize, cols)
            w1 = w[:, i1:i2].clone()
            hinv1 = self.hinv[i1:i2, i1:i2]
            diag = torch.diag(hinv1)
            err1 = torch.zeros_like(w1)
            prune1 = None
            if granularity.kind != "nm":
                block = score(w1, diag, self.x_norm[i1:i2], self._dead_in(i1, i2, dead))
                prune1 = _block_mask(block, sparsity, granularity.kind == "row", sum(dead[i1:i2]))
            else:
                prune1 = torch.zeros_like(w1, dtype=torch.bool)
                m = granularity.m
                drop = m - min(m, max(0, round((1.0 - sparsity) * m)))
            for i in range(i2 - i1):
                if granularity.kind == "nm" and i % granularity.m == 0:
                    a, b = i1 + i, i1 + i + m
                    k = max(drop, sum(dead[a:b]))  # a group's dead weights all go, even past its N:M
                    if k > 0:
                        group = score(w1[:, i : i + m], diag[i : i + m], self.x_norm[a:b], self._dead_in(a, b, dead))
                        prune1.scatter_(1, i + torch.topk(group, k, dim=1, largest=False).indices, True)
                col = w1[:, i]
                q = torch.where(prune1[:, i], torch.zeros_like(col), col)
                e = (col - q) / diag[i]
                w1[:, i:] -= e.unsqueeze(1) @ hinv1[i, i:].unsqueeze(0)
                w1[:, i] = q
                err1[:, i] = e
            w[:, i1:i2] = w1
            w[:, i2:] -= err1 @ self.hinv[i1:i2, i2:]
        return w.reshape(self.shape).to(self.dtype)

    def _dead_in(self, a: int, b: int, dead: list[bool]) -> torch.Tensor | None:
        """The dead flags of columns a..b, or None when there are none (nothing to force)."""
        return self.dead[a:b] if any(dead[a:b]) else None


def _inverse_cholesky(h: torch.Tensor, dead: torch.Tensor, damping: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + λI)⁻¹, λ = ``damping`` x mean diagonal (tenfold more until it factors).

    The mean is taken before dead inputs get a diagonal, which is then that mean: on the layer's own scale,
    so λ and H⁻¹ scale with the activations. Dead rows and columns are zero off the diagonal, so the value
    put there changes nothing for the live inputs."""
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    mean_diag = float(torch.diag(h).mean())
    if mean_diag <= 0.0:  # every input dead: all weights are pruned, H⁻¹ only has to exist
        h, mean_diag = eye.clone(), 1.0
    h[dead, dead] = mean_diag
    for attempt in range(6):
        damped = h + eye * (damping * 10**attempt * mean_diag)
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise ValueError("the layer's Hessian is not positive definite even with 10^5 times the damping")


def _saliency(metric: str):  # type: ignore[no-untyped-def]
    """Score of each weight in a block (low goes first): OBS error, or the metric of W and X; -inf at dead
    inputs, so they go first whatever the metric makes of a zero weight."""
    if metric == OBS_METRIC:
        fn = None
    else:
        check_solver_metric(metric)
        fn = get_metric(metric)

    def score(w: torch.Tensor, d: torch.Tensor, x: torch.Tensor, dead: torch.Tensor | None) -> torch.Tensor:
        if fn is None:
            s = w.pow(2) / d.pow(2).unsqueeze(0)
        else:
            zeros = torch.zeros_like(w)
            s = fn(LayerStats(W=w, X=LayerStats.broadcast_x(x, w), G=zeros, F=zeros))
        return s if dead is None else s.masked_fill(dead.unsqueeze(0), -torch.inf)

    return score


def _block_mask(score: torch.Tensor, sparsity: float, per_row: bool, dead: int) -> torch.Tensor:
    """True where a weight of the block goes: the lowest ``sparsity`` of the block (or of each row), and at
    least its ``dead`` columns (which score lowest)."""
    mask = torch.zeros_like(score, dtype=torch.bool)
    if per_row:
        k = max(round(sparsity * score.shape[1]), dead)
        if k > 0:
            mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, True)
        return mask
    k = max(round(sparsity * score.numel()), dead * score.shape[0])
    if k > 0:
        mask.view(-1)[torch.topk(score.flatten(), k, largest=False).indices] = True
    return mask
