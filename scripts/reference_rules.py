"""SparseGPT and Wanda as their papers and reference code state them, written here on their own (nothing
calls prunehive's solver, metrics or masks), for ``check_references.py`` to compare prunehive with.

SparseGPT (Frantar & Alistarh 2023), with IST-DASLab/sparsegpt's conventions: H = 2/n Σxxᵀ over n
calibration sequences; inputs that were always zero get diagonal 1 and zero weights; damping 1% of the
mean diagonal; U = upper Cholesky factor of H⁻¹; columns in blocks of 128, each block's mask chosen on its
current weights by w² / U_jj² (unstructured: scores at or below the ⌊sparsity·size⌋-th smallest; N:M: the
M-N lowest of every M), each pruned weight's error spread over the columns to its right by U's row.
Wanda (Sun et al. 2024), as locuslab/wanda's ``prune_wanda``: score |W|·‖X‖ with ‖X‖² averaged over
sequences; in each output row the ⌊sparsity·columns⌋ lowest go (stable sort), or the M-N lowest of each
N:M group.
"""

from __future__ import annotations

import torch


def sparsegpt_rule(w: torch.Tensor, h: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """OBS pruning of ``w`` given H = 2/n Σxxᵀ, with the conventions in the module docstring."""
    w, h = w.detach().float().clone(), h.clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(0.01 * h.diagonal().mean())
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for a in range(0, w.shape[1], 128):
        b = min(a + 128, w.shape[1])
        wb, ub = w[:, a:b].clone(), u[a:b, a:b]
        d = ub.diagonal()
        err = torch.zeros_like(wb)
        drop = torch.zeros_like(wb, dtype=torch.bool)
        if nm is None:
            saliency = wb.pow(2) / d.pow(2)
            drop = saliency <= saliency.flatten().sort().values[int(saliency.numel() * sparsity)]
        for j in range(b - a):
            if nm is not None and j % nm[1] == 0:
                saliency = wb[:, j : j + nm[1]].pow(2) / d[j : j + nm[1]].pow(2)
                drop.scatter_(1, j + saliency.topk(nm[1] - nm[0], dim=1, largest=False).indices, True)
            q = wb[:, j].masked_fill(drop[:, j], 0.0)
            e = (wb[:, j] - q) / d[j]
            wb[:, j:] -= e.unsqueeze(1) * ub[j, j:].unsqueeze(0)
            wb[:, j] = q
            err[:, j] = e
        w[:, a:b] = wb
        w[:, b:] -= err @ u[a:b, b:]
    return w


def wanda_rule(w: torch.Tensor, sq: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """Wanda's keep-mask: |W|·‖X‖ compared within each output row (or each N:M group)."""
    score = w.detach().float().abs() * sq.sqrt().unsqueeze(0)
    drop = torch.zeros_like(score, dtype=torch.bool)
    if nm is None:
        drop.scatter_(1, score.sort(dim=1, stable=True).indices[:, : int(score.shape[1] * sparsity)], True)
    else:
        for j in range(0, score.shape[1], nm[1]):
            group = score[:, j : j + nm[1]]
            drop.scatter_(1, j + group.topk(nm[1] - nm[0], dim=1, largest=False).indices, True)
    return ~drop
