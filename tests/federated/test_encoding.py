"""Sparse encoding: round trips, and byte counts that follow the kept fraction."""

from __future__ import annotations

import pytest
import torch

from prunehive.workers.federated.encoding import (
    MASK,
    VALUES,
    decode,
    decode_masks,
    dense_record,
    encode,
    encode_masks,
    record_bytes,
)


def state_and_masks(keep: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    state = {"fc.weight": torch.randn(256, 128, generator=gen), "fc.bias": torch.randn(256, generator=gen)}
    mask = torch.rand(256, 128, generator=gen) < keep
    state["fc.weight"] *= mask
    return state, {"fc.weight": mask}


def test_downlink_round_trip_carries_the_mask() -> None:
    state, masks = state_and_masks(0.2)
    record = encode(state, masks, send_masks=True)
    assert {"fc.weight" + VALUES, "fc.weight" + MASK, "fc.bias"} == set(record)
    decoded, found = decode(record, state)
    assert torch.equal(found["fc.weight"], masks["fc.weight"])
    for name in state:
        assert torch.equal(decoded[name], state[name])


def test_uplink_sends_values_only_and_needs_the_known_mask() -> None:
    state, masks = state_and_masks(0.2)
    record = encode(state, masks, send_masks=False)
    assert "fc.weight" + MASK not in record
    with pytest.raises(KeyError, match="no mask is known"):
        decode(record, state)
    decoded, _ = decode(record, state, masks)
    assert torch.equal(decoded["fc.weight"], state["fc.weight"])


def test_byte_counts_follow_the_kept_fraction() -> None:
    state, masks = state_and_masks(0.2)
    dense = record_bytes(dense_record(state))
    values = record_bytes(encode(state, masks, send_masks=False))
    with_masks = record_bytes(encode(state, masks, send_masks=True))
    n = 256 * 128
    kept = int(masks["fc.weight"].sum())
    assert dense == pytest.approx(4 * (n + 256), abs=400)  # float32 payload plus npy headers and keys
    assert values == pytest.approx(4 * (kept + 256), abs=400)
    assert with_masks - values == pytest.approx(n / 8, abs=200)  # one bit per weight
    assert dense / values > 4


def test_a_wrong_number_of_values_is_an_error() -> None:
    state, masks = state_and_masks(0.2)
    record = encode(state, masks, send_masks=False)
    other = {"fc.weight": ~masks["fc.weight"]}
    with pytest.raises(ValueError, match="values for a mask"):
        decode(record, state, other)


def test_nested_masks_travel_as_bitmasks() -> None:
    state, masks = state_and_masks(0.5)
    tighter = {"fc.weight": masks["fc.weight"] & (torch.rand(256, 128) < 0.5)}
    record = encode_masks([masks, tighter])
    assert record_bytes(record) == pytest.approx(2 * 256 * 128 / 8, abs=400)
    back = decode_masks(record, state)
    assert [torch.equal(a["fc.weight"], b["fc.weight"]) for a, b in zip(back, [masks, tighter], strict=True)] == [
        True,
        True,
    ]
