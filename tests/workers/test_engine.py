"""Known answers for the pruning engine: masks, achieved sparsity, structured equivalence."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from prunehive.search.space import SearchSpace
from prunehive.workers.baselines import baseline_allocation
from prunehive.workers.calibration import collect_stats
from prunehive.workers.contracts import EvalResult
from prunehive.workers.engine import PruningEngine
from prunehive.workers.flops import ChannelFlops
from prunehive.workers.layers import count_flops
from prunehive.workers.masks import Granularity, Ranking
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.digits import DigitsCNN, DigitsMLP


class QuickMLP(DigitsMLP):
    train_steps = 200


class QuickCNN(DigitsCNN):
    train_steps = 100


@pytest.fixture(scope="module")
def mlp() -> QuickMLP:
    return QuickMLP(seed=0)


@pytest.fixture(scope="module")
def cnn() -> QuickCNN:
    return QuickCNN(seed=0)


def test_finds_layers_with_params_and_flops(mlp: QuickMLP) -> None:
    engine = PruningEngine(mlp)
    assert engine.names == ["fc1", "fc2", "fc3", "fc4", "fc5"]
    fc1 = engine.layers[0]
    assert fc1.params == 64 * 256 and fc1.shape == (256, 64)
    assert fc1.flops == 2 * 64 * 256  # one example row: a multiply and an add per weight


def test_magnitude_removes_exactly_the_smallest_weights() -> None:
    w = torch.randn(8, 16)
    ranking = Ranking.build(w.abs(), Granularity.parse("unstructured"))
    mask = ranking.mask(0.25)
    assert int((~mask).sum()) == 32
    removed, kept = w.abs()[~mask], w.abs()[mask]
    assert removed.max() <= kept.min()


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
def test_nm_masks_keep_exactly_n_in_every_group(pattern: str) -> None:
    gran = Granularity.parse(pattern)
    w = torch.randn(6, 32)
    ranking = Ranking.build(w.abs(), gran)
    mask = ranking.mask(gran.default_sparsity or 0.0)
    groups = mask.reshape(6, -1, gran.m)
    assert bool((groups.sum(-1) == gran.n).all())
    kept = (w.abs() * mask).reshape(6, -1, gran.m)
    dropped = (w.abs() * ~mask).reshape(6, -1, gran.m)
    assert bool((kept.max(-1).values >= dropped.max(-1).values).all())


def test_per_row_group_is_exact_and_balanced() -> None:
    w = torch.randn(10, 7)
    mask = Ranking.build(w.abs(), Granularity.parse("unstructured", per_row=True)).mask(0.33)
    pruned_per_row = (~mask).sum(1)
    assert int(pruned_per_row.sum()) == round(0.33 * 70)
    assert int(pruned_per_row.max() - pruned_per_row.min()) <= 1


@pytest.mark.parametrize("metric", ["magnitude", "wanda", "snip", "taylor", "random"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.95])
def test_achieved_sparsity_within_one_weight(mlp: QuickMLP, metric: str, sparsity: float) -> None:
    engine = PruningEngine(mlp, metric=metric)
    result = engine.evaluate([sparsity] * len(engine.names))
    for layer in engine.layers:
        assert abs(result.layers[layer.name] * layer.params - sparsity * layer.params) <= 1.0
    assert 0.0 <= result.metrics["validation"].quality <= 1.0


def test_evaluation_restores_dense_weights(mlp: QuickMLP) -> None:
    engine = PruningEngine(mlp)
    before = {k: v.clone() for k, v in mlp.model().state_dict().items()}
    dense = engine.evaluate([0.0] * 5).metrics["validation"].quality
    engine.evaluate([0.9] * 5, recovery_steps=5)
    after = mlp.model().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert engine.evaluate([0.0] * 5).metrics["validation"].quality == dense


def test_recovery_finetuning_keeps_masks_and_helps(mlp: QuickMLP) -> None:
    engine = PruningEngine(mlp)
    plain = engine.evaluate([0.9] * 5)
    tuned = engine.evaluate([0.9] * 5, recovery_steps=100)
    assert tuned.achieved_sparsity == pytest.approx(plain.achieved_sparsity)
    assert tuned.metrics["validation"].loss < plain.metrics["validation"].loss


def test_wanda_statistics_are_input_norms(mlp: QuickMLP) -> None:
    model = mlp.model()
    stats = collect_stats(mlp, model, ["fc1"], batches=2, with_grads=False)
    xs = torch.cat([x for x, _ in mlp.calibration_batches(2)])
    expected = xs.pow(2).sum(0).sqrt()
    assert torch.allclose(stats["fc1"].X[0], expected, rtol=1e-5)


def test_export_zeroes_weights_under_their_own_names(mlp: QuickMLP) -> None:
    engine = PruningEngine(mlp)
    model = engine.export([0.5] * 5)
    fc1 = dict(model.named_modules())["fc1"]
    assert set(model.state_dict()) == set(engine.model.state_dict())  # no weight_orig / weight_mask
    assert not fc1._forward_pre_hooks
    assert float((fc1.weight == 0).float().mean()) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("task_fixture", ["mlp", "cnn"])
def test_structured_model_is_smaller_and_matches_masked(task_fixture: str, request: pytest.FixtureRequest) -> None:
    task = request.getfixturevalue(task_fixture)
    engine = PruningEngine(task, metric="magnitude", granularity="channel")
    sparsity = [0.5] * len(engine.names)
    small = engine.export(sparsity)
    x = task.split("test")[0][:32]
    with engine.pruned(sparsity) as model, torch.no_grad():
        masked_out = model(x)
    with torch.no_grad():
        small_out = small(x)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in engine.model.parameters())
    assert torch.allclose(small_out, masked_out, atol=1e-5)


@pytest.mark.parametrize("task_fixture", ["mlp", "cnn"])
def test_channel_flops_are_those_of_the_exported_model(task_fixture: str, request: pytest.FixtureRequest) -> None:
    engine = PruningEngine(request.getfixturevalue(task_fixture), granularity="channel")
    n = len(engine.names)
    for vector in ([0.5] * n, [0.1 + 0.8 * i / n for i in range(n)], [0.0] * n):
        result = engine.evaluate(vector)
        small = engine.export(vector)
        assert result.flops == count_flops(small, engine.example)[0]
    # The consumers' removed inputs count too: less than scaling each pruned layer by its density.
    half = engine.evaluate([0.5] * n)
    by_density = engine.total_flops - sum(lay.flops * 0.5 for lay in engine.layers)
    assert half.flops < by_density


class GatedMLP(nn.Module):
    """A Llama-style MLP: the gate and up projections are coupled through their product."""

    def __init__(self, hidden: int = 8, inner: int = 12) -> None:
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(hidden, inner), nn.Linear(hidden, inner), nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


def test_coupled_channel_flops_count_the_union_of_removed_channels() -> None:
    model, example = GatedMLP(), torch.randn(3, 8)
    counter = ChannelFlops(model, ["gate", "up"], example)
    assert counter.coupled
    gate, up = torch.zeros(12, dtype=torch.bool), torch.zeros(12, dtype=torch.bool)
    gate[:4], up[2:7] = True, True  # 7 channels gone from the product, so from all three layers
    small = GatedMLP(8, 12 - 7)
    assert counter.count({"gate": 4, "up": 5}, {"gate": gate, "up": up}) == count_flops(small, example)[0]
    with pytest.raises(ValueError, match="coupled"):
        counter.count({"gate": 4, "up": 5})


def test_unstructured_flops_are_the_nonzero_weights_multiply_adds(mlp: QuickMLP) -> None:
    engine = PruningEngine(mlp)
    result = engine.evaluate([0.5, 0.0, 0.25, 0.0, 0.0])
    fc1, fc3 = engine.layers[0], engine.layers[2]
    assert result.flops == int(engine.total_flops - 0.5 * fc1.flops - 0.25 * fc3.flops)


def test_results_round_trip_through_json(mlp: QuickMLP) -> None:
    result = PruningEngine(mlp).evaluate([0.5] * 5, splits=("validation", "test"))
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"metrics", "achieved_sparsity", "layers", "params", "flops", "seconds"}
    assert set(data["metrics"]["test"]) == {"accuracy", "loss", "objective"}
    assert EvalResult.from_dict(data) == result
    assert set(result.entry()) == {"layers", "achieved_sparsity", "metrics", "params", "flops"}


def test_contracts_do_not_import_torch() -> None:
    code = "import sys, prunehive.workers.contracts; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_nm_skips_layers_that_do_not_fit(cnn: QuickCNN) -> None:
    engine = PruningEngine(cnn, granularity="2:4")
    assert "conv1" in engine.skipped  # 1 input channel x 3x3 = 9 columns: no whole groups of 4
    result = engine.evaluate([0.5] * len(engine.names))
    assert result.achieved_sparsity == pytest.approx(0.5)


@pytest.mark.parametrize("allocation", ["uniform", "global", "erk", "owl"])
def test_baselines_meet_the_budget(mlp: QuickMLP, allocation: str) -> None:
    engine = PruningEngine(mlp, metric="wanda")
    space = SearchSpace(engine.layers, target=0.8)
    vector = baseline_allocation(engine, space, allocation)
    assert space.achieved(vector) == pytest.approx(0.8, abs=1e-6)
    assert engine.evaluate(vector).achieved_sparsity == pytest.approx(0.8, abs=1e-3)


def test_unknown_names_are_rejected(mlp: QuickMLP) -> None:
    with pytest.raises(ValueError, match="unknown metric 'nope'"):
        PruningEngine(mlp, metric="nope")
    with pytest.raises(ValueError, match="unknown granularity"):
        PruningEngine(mlp, granularity="3-4")
    with pytest.raises(ValueError, match="unknown task"):
        load_task("no-such-task")
    with pytest.raises(ValueError, match="unknown layers"):
        PruningEngine(mlp).evaluate({"nope": 0.5})


def test_dense_model_is_cached_and_deterministic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tiny(DigitsMLP):
        train_steps = 20

    monkeypatch.setenv("PRUNEHIVE_CACHE", str(tmp_path / "a"))
    first = Tiny(seed=3).model()
    assert len(list((tmp_path / "a" / "models").glob("*.pt"))) == 1
    cached = Tiny(seed=3).model()
    monkeypatch.setenv("PRUNEHIVE_CACHE", str(tmp_path / "b"))
    retrained = Tiny(seed=3).model()  # trained again from scratch in an empty cache
    for other in (cached, retrained):
        for (k, a), (_, b) in zip(first.state_dict().items(), other.state_dict().items(), strict=True):
            assert torch.equal(a, b), k
