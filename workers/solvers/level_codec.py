"""A pruned weight as its kept values plus a bitmask: what a level database stores per layer and level.

A level at sparsity s holds (1 - s) of the weights, so storing it dense wastes s of its bytes on zeros.
The compact form is the nonzero values in row-major order, in the weight's own dtype, and one bit per
weight saying whether it is kept (``numpy.packbits`` order, most significant bit first): at the default
levels about 0.56 of the dense bytes per level in fp32 (0.525 values + 1/32 mask), 0.59 in bf16.

Decoding is exact: every kept value comes back bit for bit (NaNs too), and pruned weights come back as
+0.0. A pruned weight that was stored as -0.0 (``w * mask`` with w < 0) therefore reads back as +0.0,
equal to it and with no effect on any product; ``canonical`` is the dense form decoding reproduces.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def encode(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask, values)``: the packed keep-bits (uint8, ceil(numel / 8)) and the kept values, 1-D."""
    flat = weight.detach().cpu().contiguous().reshape(-1)
    keep = flat != 0  # NaN is kept; -0.0 is not
    if bool(keep.all()):  # nothing pruned (the dense level): no mask, the values are the weight
        return torch.zeros(0, dtype=torch.uint8), flat
    packed = torch.from_numpy(np.packbits(keep.numpy()))
    return packed, flat[keep].contiguous()


def decode(mask: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...] | list[int]) -> torch.Tensor:
    """The dense weight of ``shape`` that ``encode`` stored, to be read only: a new tensor, or ``values``
    itself (no copy) when nothing was pruned."""
    numel = math.prod(shape)
    if mask.numel() == 0 and values.numel() == numel:
        return values.view(tuple(shape))
    keep = torch.from_numpy(np.unpackbits(mask.numpy(), count=numel)).view(torch.bool)
    out = torch.zeros(numel, dtype=values.dtype)
    if values.numel():
        out.masked_scatter_(keep, values)
    return out.view(tuple(shape))


def canonical(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` with every zero as +0.0: the tensor ``decode(*encode(weight))`` returns, bit for bit."""
    return torch.where(weight != 0, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))

