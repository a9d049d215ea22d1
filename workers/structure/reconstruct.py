"""Least-squares reconstruction of the layer that consumes removed units (``o_proj`` for heads,
``down_proj`` for channels), as ZipLM, SlimGPT and FLAP do, and the layer output error it leaves.

With X the consumer's calibration inputs, H = X^T X / n their Gram matrix and K the kept input columns,
the kept weights solve min_A ||X_K A^T - X W^T||^2, i.e. A = W H[:, K] (H[K, K] + lambda I)^-1, ridge-damped
by 1% of the mean diagonal of H[K, K] as SparseGPT damps its Hessian. The removed columns are zero in the
returned full-shaped weight, which computes exactly what the physically smaller layer computes.
"""

from __future__ import annotations

import torch

DAMP = 0.01


def keep_columns(width: int, removed: list[int], unit: int = 1) -> torch.Tensor:
    """The kept input columns of a consumer whose inputs come in units of ``unit`` columns (a KV group's
    query heads x head_dim for ``o_proj``, one column per channel for ``down_proj``)."""
    mask = torch.ones(width, dtype=torch.bool)
    for u in removed:
        mask[u * unit : (u + 1) * unit] = False
    return mask


def removed_only(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Plain removal: the removed columns zeroed, the rest unchanged."""
    return weight * keep.to(weight.dtype)


def least_squares(weight: torch.Tensor, gram: torch.Tensor, keep: torch.Tensor, damp: float = DAMP) -> torch.Tensor:
    """The kept columns refitted to reproduce the dense output on the calibration inputs (see the module)."""
    if bool(keep.all()):
        return weight.clone()
    out = torch.zeros_like(weight)
    if not bool(keep.any()):
        return out
    h = gram.double()
    hkk = h[keep][:, keep]
    lam = damp * float(torch.diagonal(hkk).mean())
    if lam <= 0.0:  # the kept inputs never fired: nothing to refit from
        return removed_only(weight, keep)
    hkk = hkk + lam * torch.eye(hkk.shape[0], dtype=h.dtype)
    rhs = h[keep] @ weight.double().T  # (kept, out) = H[K, :] W^T
    out[:, keep] = torch.linalg.solve(hkk, rhs).T.to(weight.dtype)
    return out


def output_error(dense: torch.Tensor, pruned: torch.Tensor, gram: torch.Tensor) -> float:
    """Relative output error ||X (W' - W)^T||^2 / ||X W^T||^2 on the inputs whose Gram matrix is ``gram``."""
    h = gram.double()
    diff = (pruned - dense).double()
    num = float(torch.einsum("oi,ij,oj->", diff, h, diff))
    den = float(torch.einsum("oi,ij,oj->", dense.double(), h, dense.double()))
    return num / den if den > 0 else 0.0
