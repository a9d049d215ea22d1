"""The worker holds the model once: exact restores, compact or no rankings, statistics only when read."""

from __future__ import annotations

import pytest
import torch

from prunehive.bench.memory import memory_suite
from prunehive.workers.engine import PruningEngine
from prunehive.workers.masks import Granularity, Ranking
from prunehive.workers.tasks.digits import DigitsMLP


class QuickMLP(DigitsMLP):
    train_steps = 200


@pytest.fixture(scope="module")
def mlp() -> QuickMLP:
    return QuickMLP(seed=0)


def _reference_rank(scores: torch.Tensor, gran: Granularity) -> torch.Tensor:
    """Ranks from one stable argsort per group: the order every mask must follow."""
    rows = scores.reshape(scores.shape[0], -1).double()
    if gran.kind == "layer":
        rows = rows.reshape(1, -1)
    elif gran.kind == "nm":
        rows = rows.reshape(-1, gran.m)
    order = torch.argsort(rows, dim=-1, stable=True)
    return torch.argsort(order, dim=-1).reshape(scores.shape)


@pytest.mark.parametrize("granularity", ["unstructured", "per_row", "2:4"])
@pytest.mark.parametrize("shape", [(12, 16), (300, 256)])
def test_stored_and_on_the_fly_masks_agree_even_with_ties(granularity: str, shape: tuple[int, int]) -> None:
    gran = Granularity.parse(
        "unstructured" if granularity == "per_row" else granularity, per_row=granularity == "per_row"
    )
    scores = torch.randint(0, 4, shape).float()  # many equal scores: ties are broken by position
    stored = Ranking.build(scores, gran, itemsize=4)
    on_the_fly = Ranking.build(scores, gran, itemsize=1)  # a rank may cost half a byte: none is kept
    assert on_the_fly.stored is None
    assert stored.stored is not None or gran.kind == "layer" and scores.numel() > 65536
    assert torch.equal(stored.rank, _reference_rank(scores, gran))
    assert torch.equal(on_the_fly.rank, stored.rank)
    for sparsity in (0.0, 0.1, 0.5, 0.77, 0.999, 1.0):
        mask = on_the_fly.mask(sparsity)
        assert torch.equal(mask, stored.mask(sparsity)), sparsity
        assert int((~mask).sum()) == stored.pruned_weights(sparsity)
        if gran.kind != "nm":
            assert torch.equal(mask, stored.rank >= stored._threshold(sparsity))
        dense = torch.randn(shape)
        assert torch.equal(stored.pruner(sparsity)(dense), dense * mask)
        assert torch.equal(on_the_fly.pruner(sparsity)(dense), dense * mask)
        fresh = Ranking.build(scores.clone, gran, itemsize=1)  # an engine's: writes over its fresh scores
        assert torch.equal(fresh.pruner(sparsity)(dense), dense * mask)


def test_ranks_are_compact_or_absent() -> None:
    unstructured = Granularity.parse("unstructured")
    assert Ranking.build(torch.rand(64, 64), unstructured).stored.dtype == torch.int16  # type: ignore[union-attr]
    assert Ranking.build(torch.rand(512, 512), unstructured).stored is None  # over 65,536 in the group
    assert Ranking.build(torch.rand(64, 64), unstructured, itemsize=2).stored is None  # bf16: int16 costs as much
    nm = Ranking.build(torch.rand(64, 64), Granularity.parse("2:4"), itemsize=2)
    assert nm.stored is not None and nm.stored.dtype == torch.uint8


@pytest.mark.parametrize("granularity", ["unstructured", "per_row", "2:4", "channel"])
def test_evaluation_restores_every_granularity_bit_for_bit(mlp: QuickMLP, granularity: str) -> None:
    per_row = granularity == "per_row"
    engine = PruningEngine(mlp, granularity="unstructured" if per_row else granularity, per_row=per_row)
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    storage = {k: v.data_ptr() for k, v in engine.model.state_dict().items()}
    n = len(engine.names)
    dense = engine.evaluate([0.0] * n)
    pruned = engine.evaluate([0.3 + 0.6 * i / n for i in range(n)])
    assert pruned.metrics["validation"].loss != dense.metrics["validation"].loss  # the candidate was pruned
    after = engine.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(after[k].data_ptr() == p for k, p in storage.items())  # the parameters' own tensors, never swapped
    assert engine.evaluate([0.0] * n).metrics == dense.metrics


def test_pruned_forward_equals_the_masked_weights(mlp: QuickMLP) -> None:
    engine = PruningEngine(mlp, metric="wanda")
    vector = [0.5, 0.7, 0.2, 0.9, 0.0]
    x = mlp.split("validation")[0][:16]
    masked = engine.export(vector)
    with engine.pruned(vector) as model, torch.inference_mode():
        inside = model(x)
    with torch.inference_mode():
        assert torch.equal(inside, masked(x))


def test_statistics_are_collected_only_when_read(mlp: QuickMLP) -> None:
    magnitude = PruningEngine(mlp, metric="magnitude")
    assert magnitude.stats.norms is None and not magnitude.stats.gradients  # not even a calibration pass
    wanda = PruningEngine(mlp, metric="wanda")
    assert wanda.stats.norms is not None and not wanda.stats.gradients
    snip = PruningEngine(mlp, metric="snip")
    assert snip.stats.gradients == {"G"}
    search = PruningEngine(mlp, metric="magnitude", with_grads=True)
    assert search.stats.gradients == {"G", "F"}
    search.use_metric("expr:abs(mul(W,G))")  # a metric search's formula reads G
    search.use_metric("taylor")
    with pytest.raises(ValueError, match="needs gradients"):
        wanda.use_metric("snip")
    # OWL reads input norms whatever the metric: a magnitude engine collects them on first read
    assert len(magnitude.outlier_ratios()) == 5 and magnitude.stats.norms is not None


def test_a_worker_keeps_at_most_half_the_prunable_bytes(mlp: QuickMLP) -> None:
    for metric in ("magnitude", "wanda"):
        engine = PruningEngine(mlp, metric=metric)
        weights = sum(m.weight.numel() * m.weight.element_size() for m in engine.modules.values())
        ranks = sum(
            r.stored.numel() * r.stored.element_size() for r in engine.rankings.values() if r.stored is not None
        )
        assert 0 < ranks <= weights / 2


def test_memory_suite_reports_the_table() -> None:
    result = memory_suite(["digits-mlp"])
    assert [(r["task"], r["metric"]) for r in result["tasks"]] == [("digits-mlp", "magnitude"), ("digits-mlp", "wanda")]
    for row in result["tasks"]:
        assert row["model_bytes"] == 4 * sum(
            a * b + b for a, b in [(64, 256), (256, 256), (256, 128), (128, 64), (64, 10)]
        )
        assert row["worker_extra_bytes"] == row["worker_peak_bytes"] - row["model_rss_bytes"]
        assert row["bare_eval_extra_bytes"] >= 0
        assert row["extra_over_model"] == pytest.approx(row["worker_extra_bytes"] / row["model_bytes"])
