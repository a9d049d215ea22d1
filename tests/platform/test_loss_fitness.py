"""``search.fitness: loss``: strategies maximise minus the validation loss, centrally and on Flower clients."""

from __future__ import annotations

import pytest

from prunehive.platform.jobs.search.setup import objective_name
from prunehive.platform.jobs.search.trials import fitness_of, objective_values
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.workers.contracts import EvalResult, SplitMetrics, WorkerInfo


def scored(accuracy: float, loss: float) -> EvalResult:
    metrics = {"validation": SplitMetrics("accuracy", accuracy, loss, accuracy)}
    return EvalResult(metrics, 0.9, {"fc1": 0.9}, 100, 1000, 0.01)


def test_loss_fitness_ranks_equal_accuracies_by_their_loss() -> None:
    sure, unsure = scored(0.8, 0.4), scored(0.8, 0.9)
    assert fitness_of(sure, "loss") == pytest.approx(-0.4)
    assert fitness_of(sure) == fitness_of(unsure) == pytest.approx(0.8)  # accuracy cannot tell them apart
    assert objective_values(["quality"], sure, 1000, fitness="loss") > objective_values(
        ["quality"], unsure, 1000, fitness="loss"
    )
    # a lower loss wins even against a higher accuracy: the loss is what is maximised
    assert fitness_of(scored(0.7, 0.3), "loss") > fitness_of(scored(0.8, 0.5), "loss")


def test_federated_evaluation_takes_loss_fitness_and_refuses_kl() -> None:
    base = {
        "kind": "search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.9},
        "search": {"strategy": "evolution", "budget": 4, "evaluation": "federated", "fitness": "loss"},
        "federated": {"clients": 4},
    }
    spec = parse_spec(base)
    assert spec.search.fitness == "loss"
    info = WorkerInfo([], [], "accuracy", True, 1, 1, worker="here", build_seconds=0.0, device="cpu")
    assert objective_name(spec, info) == "val_neg_loss"  # Optuna's dashboard names what is maximised
    with pytest.raises(SpecError, match="search.fitness: kl compares with the dense model on central data"):
        parse_spec({**base, "search": {**base["search"], "fitness": "kl"}})
