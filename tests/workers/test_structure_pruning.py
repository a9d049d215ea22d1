"""Structured pruning: least-squares reconstruction against plain removal, unit choice at a target, Taylor
importance, the smaller model's FLOPs, and the blocks x sublayers heatmap."""

from __future__ import annotations

import pytest
import torch
from structured_tasks import TinyLlamaTask

from prunehive.platform.tracking.block_plots import MANY_BLOCKS, block_heatmap, layer_figure, split_blocks
from prunehive.workers.structure.accounting import removed_params
from prunehive.workers.structure.errors import reconstruction_errors, summarise
from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.pruner import StructuredPruner
from prunehive.workers.structure.reconstruct import keep_columns, least_squares, output_error, removed_only


@pytest.fixture(scope="module")
def task() -> TinyLlamaTask:
    return TinyLlamaTask()


def test_least_squares_recovers_columns_that_the_kept_ones_span() -> None:
    gen = torch.Generator().manual_seed(0)
    kept = torch.randn(256, 6, generator=gen)
    x = torch.cat([kept, kept[:, :2] @ torch.randn(2, 2, generator=gen)], dim=1)  # the last two: combinations
    weight = torch.randn(5, 8, generator=gen)
    gram = x.T @ x / len(x)
    keep = keep_columns(8, [6, 7])
    fitted = least_squares(weight, gram, keep, damp=1e-8)
    assert torch.all(fitted[:, 6:] == 0)
    assert output_error(weight, fitted, gram) < 1e-6 < output_error(weight, removed_only(weight, keep), gram)


def test_reconstruction_beats_plain_removal_on_held_out_inputs_at_every_level(task: TinyLlamaTask) -> None:
    rows = reconstruction_errors(task, calibration_batches=8, heldout_batches=2)
    assert {r.kind for r in rows} == {"head", "channel"} and len(rows) == 3 * (1 + 4)
    assert all(r.reconstruction < r.removal for r in rows), [r for r in rows if r.reconstruction >= r.removal]
    assert all(s["wins"] == s["layers"] for s in summarise(rows))


@pytest.mark.parametrize("granularity", ["head", "channel", "block", "structured"])
def test_a_plan_removes_the_target_and_keeps_a_unit_of_each_kind(task: TinyLlamaTask, granularity: str) -> None:
    pruner = StructuredPruner(task, granularity, "magnitude", calibration_batches=2)
    for allocation in ("uniform", "global"):
        plan = pruner.plan(0.3, allocation)
        achieved = removed_params(pruner.structure, plan) / pruner.prunable
        assert 0.3 <= achieved < 0.4
        assert len(plan.kept_blocks()) >= 1
        assert all(
            b.removed or (b.kv_groups is None or b.kv_groups) and (b.channels is None or b.channels)
            for b in plan.blocks
        )
    with pytest.raises(ValueError, match=f"sparsity 0.99 removes more than {granularity} pruning can"):
        pruner.plan(0.99)


def test_block_importance_removes_the_block_closest_to_identity(task: TinyLlamaTask) -> None:
    pruner = StructuredPruner(task, "block", "magnitude", calibration_batches=2)
    plan = pruner.plan(0.01)
    least = min(pruner.scores.blocks, key=lambda i: pruner.scores.blocks[i])
    assert all(0.0 <= v <= 2.0 for s in pruner.scores.sublayers.values() for v in s.values())
    assert [i for i, b in enumerate(plan.blocks) if b.removed] == [least]


def test_taylor_importance_prunes_and_reconstruction_keeps_quality_closer(task: TinyLlamaTask) -> None:
    pruner = StructuredPruner(task, "structured", "taylor", calibration_batches=2)
    assert all(s.shape == (2,) for s in pruner.scores.groups.values())
    block = pruner.scores.sublayers[0]
    assert pruner.scores.blocks[0] == pytest.approx(block["attention"] + block["mlp"], rel=1e-5)  # with the norms
    plan = pruner.plan(0.25, "uniform")
    dense = pruner.dense().metrics["validation"].loss
    removal = pruner.evaluate(plan, pruner.weights(plan, "mask")).metrics["validation"].loss
    fitted = pruner.evaluate(plan, pruner.weights(plan, "sparsegpt"))
    assert fitted.params == pruner.total_params - removed_params(pruner.structure, plan)
    assert abs(fitted.metrics["validation"].loss - dense) < abs(removal - dense)


def test_flops_of_a_removed_block_and_of_halved_widths(task: TinyLlamaTask) -> None:
    pruner = StructuredPruner(task, "structured", "magnitude", calibration_batches=1)
    gone = StructurePlan((BlockPlan(), BlockPlan(attention=False, mlp=False), BlockPlan()))
    assert pruner.measure(gone)[3] == pruner.total_flops - pruner.module_flops["model.layers.1"]
    half = StructurePlan(tuple(BlockPlan(kv_groups=(0,), channels=tuple(range(32))) for _ in range(3)))
    achieved, layers, params, flops = pruner.measure(half)
    assert set(layers.values()) == {0.5} and params == pruner.total_params - removed_params(pruner.structure, half)
    assert achieved == pytest.approx(removed_params(pruner.structure, half) / pruner.prunable)
    blocks = sum(pruner.module_flops[f"model.layers.{i}"] for i in range(3))
    assert flops == pytest.approx(pruner.total_flops - blocks / 2, rel=1e-6)


def test_many_blocks_read_as_a_blocks_by_sublayers_heatmap() -> None:
    subs = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj"]
    names = [f"model.layers.{i}.{s}" for i in range(12) for s in subs]
    blocks, columns, cells = split_blocks(names)
    assert len(blocks) == 12 and columns == subs and cells["model.layers.3.mlp.gate_proj"] == (3, 4)
    fig = block_heatmap(names, [i / len(names) for i in range(len(names))])
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (12, 5) and float(image[3, 4]) == pytest.approx(19 / 60)
    assert layer_figure(names, [0.5] * len(names)).axes[0].images  # heatmap from MANY_BLOCKS blocks on
    few = names[: 5 * (MANY_BLOCKS - 1)]
    assert not layer_figure(few, [0.5] * len(few)).axes[0].images  # bars below it
