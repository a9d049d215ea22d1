"""The federated spec: the issue's example validates as written; bad input names the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunehive.platform.spec.job import SpecError, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_example_spec_validates_with_defaults() -> None:
    spec = load_spec(EXAMPLES / "digits-mlp-federated.yaml")
    assert spec.kind == "federated" and spec.pruning.plan == "progressive"
    fed = spec.federated
    assert (fed.clients, fed.rounds, fed.partition_kind, fed.partition_value) == (10, 20, "dirichlet", 0.5)
    assert fed.fraction == 1.0 and not fed.dense_reference and fed.tiers == []


def test_tiers_example_validates() -> None:
    spec = load_spec(EXAMPLES / "digits-mlp-federated-tiers.yaml")
    assert spec.pruning.plan == "heterogeneous" and spec.federated.tiers == [0.5, 0.8, 0.95]


def test_structured_example_validates() -> None:
    spec = load_spec(EXAMPLES / "digits-cnn-federated-channel.yaml")
    assert (spec.pruning.metric, spec.pruning.granularity, spec.pruning.plan) == ("snip", "channel", "fixed")


def test_plan_defaults_to_fixed() -> None:
    assert parse_spec({"kind": "federated"}).pruning.plan == "fixed"


@pytest.mark.parametrize("metric", ["magnitude", "wanda", "snip", "taylor", "random", "expr:mul(abs(W), X)"])
@pytest.mark.parametrize(
    ("granularity", "per_row"), [("unstructured", False), ("unstructured", True), ("2:4", False), ("channel", False)]
)
def test_every_metric_and_granularity_is_accepted(metric: str, granularity: str, per_row: bool) -> None:
    pruning = {"metric": metric, "granularity": granularity, "per_row": per_row, "plan": "progressive"}
    spec = parse_spec({"kind": "federated", "task": "digits-cnn", "pruning": pruning})
    assert (spec.pruning.metric, spec.pruning.granularity) == (metric, granularity)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"federated": {"clients": 1}}, "federated.clients:"),
        ({"federated": {"fraction": 0.01}}, "federated.fraction: 0.01 of 10 clients"),
        ({"federated": {"partition": "pathological"}}, "federated.partition:"),
        ({"federated": {"partition": {"dirichlet": 0}}}, "federated.partition: dirichlet must be positive"),
        ({"federated": {"partition": {"shards": 1.5}}}, "federated.partition: shards must be a whole number"),
        ({"federated": {"tiers": [0.5, 1.2]}, "pruning": {"plan": "heterogeneous"}}, "federated.tiers:"),
        ({"pruning": {"plan": "heterogeneous"}}, "federated.tiers: the heterogeneous plan needs"),
        ({"federated": {"tiers": [0.5, 0.8]}}, "federated.tiers: tiers are for plan: heterogeneous"),
        ({"federated": {"ramp_rounds": 30}}, "federated.ramp_rounds:"),
        ({"federated": {"wat": 1}}, "federated.wat: unknown field"),
        ({"pruning": {"plan": "gradual"}}, "pruning.plan:"),
        ({"pruning": {"plan": "progressive", "from_job": "abc"}}, "from_job"),
        ({"pruning": {"metric": "snap"}}, "pruning.metric: 'snap' is not one of"),
        ({"pruning": {"granularity": "4:2"}}, "pruning.granularity: unknown granularity '4:2'"),
        ({"pruning": {"flops_budget": 0.5}}, "pruning.flops_budget: federated plans take a parameter sparsity"),
        ({"task": "code-lm"}, "task: federated runs need a classification task"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.").replace("(", r"\(")) as err:
        parse_spec({"kind": "federated", **fields})
    assert "\n" not in str(err.value)
