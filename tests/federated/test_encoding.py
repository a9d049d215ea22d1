"""Sparse encoding: round trips, and byte counts that follow the kept fraction."""

from __future__ import annotations

import pytest
import torch

from prunehive.workers.federated.encoding import (
    MASK,
    ROWS,
    VALUES,
    decode,
    decode_masks,
    dense_record,
    encode,
    encode_masks,
    record_bytes,
)
from prunehive.workers.federated.plans import nested_masks, with_bias_masks
from prunehive.workers.masks import Granularity


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


def structured(granularity: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A conv layer pruned to 50% by channel or N:M masks built by the workers' rankings."""
    gen = torch.Generator().manual_seed(0)
    state = {"conv.weight": torch.randn(64, 32, 3, 3, generator=gen), "conv.bias": torch.randn(64, generator=gen)}
    masks = with_bias_masks(
        nested_masks(
            {"conv.weight": state["conv.weight"].abs()}, [{"conv.weight": 0.5}], Granularity.parse(granularity)
        ),
        set(state) if granularity == "channel" else set(),
    )[0]
    return {n: t * masks[n] if n in masks else t for n, t in state.items()}, masks


def test_channel_masks_travel_as_one_bit_per_channel() -> None:
    state, masks = structured("channel")
    assert set(masks) == {"conv.weight", "conv.bias"} and int(masks["conv.bias"].sum()) == 32
    down = encode(state, masks, send_masks=True)
    assert {"conv.weight" + VALUES, "conv.weight" + ROWS, "conv.bias" + VALUES, "conv.bias" + MASK} == set(down)
    decoded, found = decode(down, state)
    assert all(torch.equal(found[n], masks[n]) and torch.equal(decoded[n], state[n]) for n in state)
    dense = record_bytes(dense_record(state))
    up = record_bytes(encode(state, masks, send_masks=False))
    assert up == pytest.approx(dense / 2, abs=400)  # half the channels: half the weights and biases
    assert record_bytes(down) - up == pytest.approx(64 / 8 + 64 / 8, abs=300)  # a bit per channel, per bias
    back = decode_masks(encode_masks([masks]), state)[0]
    assert all(torch.equal(back[n], masks[n]) for n in masks)


def test_two_of_four_masks_keep_half_of_every_group_and_cost_a_bit_per_weight() -> None:
    state, masks = structured("2:4")
    assert set(masks) == {"conv.weight"}
    groups = masks["conv.weight"].reshape(64, -1, 4).sum(-1)
    assert bool((groups == 2).all())
    down = encode(state, masks, send_masks=True)
    assert "conv.weight" + MASK in down
    decoded, found = decode(down, state)
    assert torch.equal(found["conv.weight"], masks["conv.weight"]) and torch.equal(
        decoded["conv.weight"], state["conv.weight"]
    )
    n = 64 * 32 * 9
    values = record_bytes(encode(state, masks, send_masks=False))
    assert values == pytest.approx(4 * (n / 2 + 64), abs=400)
    assert record_bytes(down) - values == pytest.approx(n / 8, abs=200)
