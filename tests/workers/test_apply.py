"""One way to apply a candidate: the engine's fast hook, ``apply`` on a copy, ``export``, the recovery
fine-tune, the solver path and the federated masks all zero the same weights and biases."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunehive.workers.apply import apply, candidate_masks, masked, output_keep, recover, with_biases
from prunehive.workers.contracts import SplitMetrics
from prunehive.workers.engine import PruningEngine
from prunehive.workers.federated.plans import nested_masks, with_bias_masks
from prunehive.workers.kl import score_splits
from prunehive.workers.masks import Granularity
from prunehive.workers.solvers.level_engine import LevelEngine, open_database
from prunehive.workers.tasks.base import Task
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


def validation(task: Task, model: nn.Module) -> SplitMetrics:
    """The validation scores a worker records, of a model as it stands."""
    return score_splits(task, model, ("validation",))["validation"]


CASES = [
    ("mlp", "unstructured", False),
    ("mlp", "unstructured", True),
    ("cnn", "2:4", False),
    ("cnn", "channel", False),
]


@pytest.mark.parametrize(("task", "granularity", "per_row"), CASES)
def test_the_hook_computes_what_apply_writes(
    task: str, granularity: str, per_row: bool, request: pytest.FixtureRequest
) -> None:
    engine = PruningEngine(request.getfixturevalue(task), "wanda", granularity, per_row=per_row)
    vector = [0.6, 0.3, 0.8, 0.5, 0.0][: len(engine.names)]
    x = engine.task.split("validation")[0][:64]
    written = copy.deepcopy(engine.model)
    candidate = engine.candidate(vector)
    apply(written, candidate)
    with engine.pruned(vector) as model, torch.inference_mode():
        hooked = model(x)
    with torch.inference_mode():
        assert torch.equal(hooked, written(x))
        assert torch.equal(engine.export(vector, shrink=False)(x), written(x))
    assert engine.evaluate(vector).metrics["validation"] == validation(engine.task, written)
    modules = dict(written.named_modules())
    for name, mask in engine.masks(vector).items():
        assert torch.equal(modules[name].weight == 0, ~mask | (engine.model.get_submodule(name).weight == 0))
    if granularity == "channel":  # removed outputs lose their bias, under the rule the hook reads too
        pruned = [n for n in engine.names if f"{n}.bias" in candidate and not candidate[f"{n}.bias"].all()]
        assert pruned
        for name in pruned:
            assert bool((modules[name].bias[~candidate[f"{name}.bias"]] == 0).all())
            assert bool((modules[name].bias[candidate[f"{name}.bias"]] != 0).all())


def test_channel_bias_rule_is_one_rule() -> None:
    """The engine's candidate masks and the federated tiers' bias masks come from ``output_keep``."""
    scores = torch.rand(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    (tier,) = nested_masks({"conv.weight": scores}, [{"conv.weight": 0.5}], Granularity.parse("channel"))
    (federated,) = with_bias_masks([tier], {"conv.bias"})
    layer = torch.nn.Conv2d(8, 16, 3)
    model = torch.nn.Sequential()
    model.add_module("conv", layer)
    engine_form = candidate_masks(model, {"conv": tier["conv.weight"]}, channel=True)
    assert torch.equal(federated["conv.bias"], engine_form["conv.bias"])
    assert torch.equal(federated["conv.bias"], output_keep(tier["conv.weight"]))
    assert int(federated["conv.bias"].sum()) == 8
    assert with_biases(tier, set()) == tier  # no bias named: the weights alone
    state = masked(model.state_dict(), engine_form)
    apply(model, engine_form)
    assert all(torch.equal(state[n], t) for n, t in model.state_dict().items())


def test_recovery_is_the_same_fine_tune_everywhere(mlp: QuickMLP) -> None:
    """``evaluate`` with recovery scores exactly the model ``export`` writes with the same steps."""
    engine = PruningEngine(mlp, "magnitude")
    vector = [0.9, 0.8, 0.7, 0.6, 0.5]
    tuned = engine.export(vector, recovery_steps=20)
    assert engine.evaluate(vector, recovery_steps=20).metrics["validation"] == validation(mlp, tuned)
    masks = engine.masks(vector)
    for name, module in tuned.named_modules():
        if name in masks:
            assert bool((module.weight[~masks[name]] == 0).all())
    plain = engine.export(vector)
    assert not all(torch.equal(a, b) for a, b in zip(plain.parameters(), tuned.parameters(), strict=True))
    again = copy.deepcopy(engine.model)
    recover(mlp, again, engine.candidate(vector), 20)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), tuned.parameters(), strict=True))


def test_solver_weights_are_held_through_recovery(mlp: QuickMLP) -> None:
    engine = PruningEngine(mlp, "magnitude")
    levels = LevelEngine(engine, open_database(engine, "mask", levels=[0.0, 0.5, 0.9]))
    vector = [0.5, 0.9, 0.9, 0.5, 0.0]
    before = levels.export(vector)
    after = levels.export(vector, recovery_steps=10)
    for (name, a), b in zip(before.named_parameters(), after.parameters(), strict=True):
        if name.endswith("weight"):
            assert bool((b[a == 0] == 0).all()), name
    assert levels.evaluate(vector, recovery_steps=10).metrics["validation"] == validation(mlp, after)
