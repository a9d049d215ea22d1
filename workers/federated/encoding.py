"""Sparse model updates as Flower ``ArrayRecord``s, and what they cost on the wire.

A masked tensor travels as its kept values (float32, in flattened order) under ``name@values``
and, when the receiver does not already know the mask, the mask as a packed bitmask (1 bit per
weight) under ``name@mask``. Downlink carries masks (clients learn them from the server); uplink
carries values only, since the server knows which mask each client trained under. Unmasked
tensors (biases) travel dense. Byte counts are ``ArrayRecord.count_bytes()``: the NumPy-serialised
payload Flower ships, headers and keys included, so dense and sparse are counted the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

Masks = Mapping[str, torch.Tensor]
VALUES, MASK = "@values", "@mask"


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
            record[name + MASK] = as_array(np.packbits(keep.numpy()))
    return record


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
        if name + MASK in record:
            bits = np.unpackbits(record[name + MASK].numpy(), count=like.numel()).astype(bool)
            mask = torch.from_numpy(bits).reshape(like.shape)
        elif masks is not None and name in masks:
            mask = masks[name].bool()
        else:
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
    """Bitmasks only (``name@i`` for the i-th mask set): the sparser tiers' sub-networks a client also trains."""
    record = ArrayRecord()
    for i, tier in enumerate(masks):
        for name, mask in tier.items():
            record[f"{name}@{i}"] = as_array(np.packbits(mask.reshape(-1).bool().numpy()))
    return record


def decode_masks(record: ArrayRecord, template: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The mask sets of :func:`encode_masks`, in order."""
    out: dict[int, dict[str, torch.Tensor]] = {}
    for key in record:
        name, _, index = key.rpartition("@")
        like = template[name]
        bits = np.unpackbits(record[key].numpy(), count=like.numel()).astype(bool)
        out.setdefault(int(index), {})[name] = torch.from_numpy(bits).reshape(like.shape)
    return [out[i] for i in sorted(out)]


def record_bytes(record: ArrayRecord) -> int:
    """Bytes on the wire for this record (serialised arrays and their keys)."""
    return int(record.count_bytes())
