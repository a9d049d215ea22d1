"""Plans: the ramp, per-layer allocations, and nested tier masks from one ranking."""

from __future__ import annotations

import pytest
import torch

from prunehive.search.space import Layer, SearchSpace
from prunehive.workers.federated.plans import (
    MaskPlan,
    layer_sparsities,
    masked_sparsity,
    nested_masks,
    ramp,
    with_bias_masks,
)
from prunehive.workers.masks import Granularity

SPACE = SearchSpace(
    [Layer("fc1", "linear", (32, 16), 512, 1024), Layer("fc2", "linear", (10, 32), 320, 640)], target=0.8
)


def scores() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"fc1.weight": torch.rand(32, 16, generator=gen), "fc2.weight": torch.rand(10, 32, generator=gen)}


def test_ramp_is_dense_first_and_reaches_the_target() -> None:
    values = [ramp(r, 0.8, 4) for r in range(1, 8)]
    assert values[0] == 0.0
    assert values[4:] == [pytest.approx(0.8)] * 3
    assert all(a < b for a, b in zip(values[:5], values[1:5], strict=False))


@pytest.mark.parametrize("allocation", ["uniform", "global", "erk", "owl"])
def test_layer_sparsities_meet_the_target(allocation: str) -> None:
    by_layer = layer_sparsities(SPACE, 0.8, allocation, scores())
    total = sum(by_layer[layer.name] * layer.params for layer in SPACE.layers) / 832
    assert total == pytest.approx(0.8, abs=1e-3)


def test_tier_masks_are_nested_from_one_ranking() -> None:
    s = scores()
    tiers = [{"fc1.weight": t, "fc2.weight": t} for t in (0.5, 0.8, 0.95)]
    tiers[2]["fc2.weight"] = 0.7  # a non-monotone allocation is clipped so nesting still holds
    masks = nested_masks(s, tiers)
    for looser, tighter in zip(masks, masks[1:], strict=False):
        for name in s:
            assert not (tighter[name] & ~looser[name]).any()  # tighter is a subset of looser
    assert masked_sparsity(masks[0], 832) == pytest.approx(0.5, abs=1e-2)
    assert masked_sparsity({"fc1.weight": masks[2]["fc1.weight"]}, 512) == pytest.approx(0.95, abs=1e-2)
    kept = masks[1]["fc1.weight"]
    assert s["fc1.weight"][kept].min() >= s["fc1.weight"][~kept].max()  # the most important weights stay


def test_plans_change_masks_when_they_should() -> None:
    fixed = MaskPlan("fixed", [0.8], SPACE)
    progressive = MaskPlan("progressive", [0.8], SPACE, ramp_rounds=3)
    tiers = MaskPlan("heterogeneous", [0.5, 0.9], SPACE, ramp_rounds=2)
    dense = MaskPlan("dense", [0.0], SPACE)
    assert [fixed.changes_at(r) for r in (1, 2, 3)] == [True, False, False]
    assert [progressive.changes_at(r) for r in (1, 2, 4, 5)] == [False, True, True, False]
    assert progressive.masks(1, scores()) is None  # round 1 trains dense
    assert not any(dense.changes_at(r) for r in (1, 2))
    two = tiers.masks(3, scores())
    assert two is not None and len(two) == 2
    assert masked_sparsity(two[1], 832) == pytest.approx(0.9, abs=1e-2)


CONV = SearchSpace(
    [Layer("conv", "conv2d", (16, 8, 3, 3), 1152, 0), Layer("fc", "linear", (10, 64), 640, 0)], target=0.5
)


def conv_scores() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.rand(16, 8, 3, 3, generator=gen), "fc.weight": torch.rand(10, 64, generator=gen)}


def test_channel_tiers_drop_whole_channels_and_nest() -> None:
    plan = MaskPlan("heterogeneous", [0.25, 0.5], CONV, ramp_rounds=1, granularity=Granularity.parse("channel"))
    tiers = plan.masks(2, conv_scores())
    assert tiers is not None
    for masks in tiers:
        rows = masks["conv.weight"].reshape(16, -1)
        assert bool((rows == rows[:, :1]).all())  # a channel is kept or dropped whole
    assert [int(t["conv.weight"].reshape(16, -1)[:, 0].sum()) for t in tiers] == [12, 8]
    assert not (tiers[1]["conv.weight"] & ~tiers[0]["conv.weight"]).any()
    with_bias = with_bias_masks(tiers, {"conv.bias"})
    assert torch.equal(with_bias[1]["conv.bias"], tiers[1]["conv.weight"][:, 0, 0, 0]) and "fc.bias" not in with_bias[1]


@pytest.mark.parametrize("allocation", ["uniform", "global", "owl"])
def test_two_of_four_masks_keep_two_of_every_four(allocation: str) -> None:
    plan = MaskPlan("fixed", [0.5], CONV.with_target(0.5), allocation, granularity=Granularity.parse("2:4"))
    (masks,) = plan.masks(1, conv_scores()) or [{}]
    fc = masks["fc.weight"].reshape(10, -1, 4).sum(-1)
    assert bool((fc <= 2).all()) and masked_sparsity(masks, 1792) >= 0.45
    if allocation == "uniform":
        assert bool((fc == 2).all()) and masked_sparsity(masks, 1792) == pytest.approx(0.5)
