"""Sparse model updates as Flower ``ArrayRecord``s, and what they cost on the wire.

A masked tensor travels as its kept values (float32, in flattened order) under ``name@values``
and, when the receiver does not already know the mask, the mask as a packed bitmask: one bit per
weight under ``name@mask``, or one bit per output channel under ``name@rows`` when whole channels
are kept or dropped (channel pruning). Downlink carries masks (clients learn them from the server);
uplink carries values only, since the server knows which mask each client trained under. Unmasked
tensors (biases, except under channel masks) travel dense. Byte counts are
``ArrayRecord.count_bytes()``: the NumPy-serialised payload Flower ships, headers and keys
included, so dense and sparse are counted the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

Masks = Mapping[str, torch.Tensor]
VALUES, MASK, ROWS = "@values", "@mask", "@rows"


def as_array(values: np.ndarray) -> Array:
    return Array.from_numpy_ndarray(np.ascontiguousarray(values))


def dense_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    """The plain FedAvg payload: every tensor, dense float32."""
    return ArrayRecord({n: as_array(t.detach().cpu().float().numpy()) for n, t in state.items()})


def encode(state: Mapping[str, torch.Tensor], masks: Masks | None, send_masks: bool) -> ArrayRecord:
    """Kept values of masked tensors (plus their bitmasks if ``send_masks``), other tensors dense."""
    record = ArrayRecord()
    for name, tensor in state.items():
        flat = tensor.detach().cpu().float().reshape(-1)
        mask = None if masks is None else masks.get(name)
        if mask is None:
            record[name] = as_array(tensor.detach().cpu().float().numpy())
            continue
        keep = mask.reshape(-1).bool()
        record[name + VALUES] = as_array(flat[keep].numpy())
        if send_masks:
            put_mask(record, name, "", mask)
    return record


def put_mask(record: ArrayRecord, name: str, suffix: str, mask: torch.Tensor) -> None:
    """A bitmask under ``name@rows<suffix>`` (one bit per output channel) when whole channels are kept
    or dropped, else under ``name@mask<suffix>`` (one bit per weight); both are lossless."""
    rows = mask.reshape(mask.shape[0], -1).bool() if mask.dim() > 1 else None
    if rows is not None and bool((rows == rows[:, :1]).all()):
        record[name + ROWS + suffix] = as_array(np.packbits(rows[:, 0].numpy()))
    else:
        record[name + MASK + suffix] = as_array(np.packbits(mask.reshape(-1).bool().numpy()))


def get_mask(record: ArrayRecord, name: str, suffix: str, like: torch.Tensor) -> torch.Tensor | None:
    """The mask :func:`put_mask` stored for ``name`` (shaped like ``like``), or None if there is none."""
    if name + ROWS + suffix in record:
        bits = np.unpackbits(record[name + ROWS + suffix].numpy(), count=like.shape[0]).astype(bool)
        keep = torch.from_numpy(bits).reshape([-1] + [1] * (like.dim() - 1))
        return keep.expand(like.shape).contiguous()
    if name + MASK + suffix in record:
        bits = np.unpackbits(record[name + MASK + suffix].numpy(), count=like.numel()).astype(bool)
        return torch.from_numpy(bits).reshape(like.shape)
    return None


def decode(
    record: ArrayRecord, template: Mapping[str, torch.Tensor], masks: Masks | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Dense tensors (zeros where pruned) and the masks, read from the record or taken from ``masks``."""
    state: dict[str, torch.Tensor] = {}
    found: dict[str, torch.Tensor] = {}
    for name, like in template.items():
        if name in record:
            state[name] = torch.from_numpy(record[name].numpy().copy()).reshape(like.shape)
            continue
        if name + VALUES not in record:
            raise KeyError(f"update has no tensor {name!r}")
        mask = get_mask(record, name, "", like)
        if mask is None and masks is not None and name in masks:
            mask = masks[name].bool()
        if mask is None:
            raise KeyError(f"update carries values of {name!r} but no mask is known for it")
        values = torch.from_numpy(record[name + VALUES].numpy().copy())
        if int(mask.sum()) != values.numel():
            raise ValueError(f"{name!r}: {values.numel()} values for a mask keeping {int(mask.sum())}")
        dense = torch.zeros(like.numel(), dtype=torch.float32)
        dense[mask.reshape(-1)] = values
        state[name] = dense.reshape(like.shape)
        found[name] = mask
    return state, found


def encode_masks(masks: list[Masks]) -> ArrayRecord:
    """Bitmasks only (suffix ``@i`` for the i-th mask set): the sparser tiers' sub-networks a client also trains."""
    record = ArrayRecord()
    for i, tier in enumerate(masks):
        for name, mask in tier.items():
            put_mask(record, name, f"@{i}", mask)
    return record


def decode_masks(record: ArrayRecord, template: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The mask sets of :func:`encode_masks`, in order."""
    out: dict[int, dict[str, torch.Tensor]] = {}
    for key in record:
        rest, _, index = key.rpartition("@")
        name = rest.rpartition("@")[0]
        mask = get_mask(record, name, f"@{index}", template[name])
        if mask is None:
            raise KeyError(f"{key!r} is not a mask key")
        out.setdefault(int(index), {})[name] = mask
    return [out[i] for i in sorted(out)]


def record_bytes(record: ArrayRecord) -> int:
    """Bytes on the wire for this record (serialised arrays and their keys)."""
    return int(record.count_bytes())
