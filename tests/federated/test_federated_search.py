"""Federated evaluation of search candidates, in-process: what the server receives from its clients (only
sums, counts and model updates), that every client together scores a candidate exactly as the central
splits do, how a search stage maps onto clients, and the spec's one-line refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from flwr.app import Message, MessageType
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.workers.engine import PruningEngine
from prunehive.workers.federated.encoding import decode
from prunehive.workers.federated.federated_eval import FederatedEngine, FederatedEvaluation
from prunehive.workers.federated.statistics import STATS_ACTION
from prunehive.workers.tasks.digits import DigitsMLP

STATS = f"{MessageType.QUERY}.{STATS_ACTION}"
# Everything a client may say besides model-shaped arrays: counts and per-client means, by message type.
SCALARS = {
    STATS: {"metrics": {"rows", "batches"}},
    MessageType.TRAIN: {"metrics": {"num-examples", "train-loss", "accuracy", "train-flops", "peak-bytes"}},
    MessageType.EVALUATE: {s: {"num-examples", "accuracy", "loss"} for s in ("validation", "test")},
}


def settings(**kw: Any) -> FederatedEvaluation:
    base: dict[str, Any] = {"task": "digits-mlp", "clients": 4, "partition_kind": "dirichlet", "partition_value": 0.5}
    return FederatedEvaluation(**{**base, **kw})


def test_the_server_receives_only_sums_counts_and_model_updates() -> None:
    """Every reply of a build (statistics), a recovery round (training) and a scoring (evaluation) is read:
    arrays are per-input-channel sums (X), weight-shaped batch sums (G, F) or the model's own tensors, and
    the rest are scalars; no client row, label or per-sample activation ever reaches the server."""
    seen: list[tuple[Message, Message]] = []
    task = DigitsMLP()
    engine = FederatedEngine(
        task,
        settings(eval_fraction=0.5, recovery_rounds=1),
        "wanda",
        with_grads=True,
        listeners=[lambda sent, reply: seen.append((sent, reply))],
    )
    candidate = engine.candidate([0.8] * len(engine.names))
    result = engine.evaluate([0.8] * len(engine.names))
    kinds = [sent.metadata.message_type for sent, _ in seen]
    assert kinds.count(STATS) == 4 and kinds.count(MessageType.TRAIN) == 4 and kinds.count(MessageType.EVALUATE) == 2

    state = {k: v.detach() for k, v in engine.model.state_dict().items()}
    weights = {f"{n}.weight": state[f"{n}.weight"] for n in engine.names}
    inputs = {f"{n}.weight": engine.modules[n].weight.shape[1] for n in engine.names}
    evaluations = []
    for sent, reply in seen:
        assert not reply.has_error(), reply.error.reason
        kind, content = sent.metadata.message_type, reply.content
        assert not content.config_records  # nothing but arrays and metrics comes back
        assert set(content.metric_records) <= set(SCALARS[kind]), (kind, set(content.metric_records))
        for name, record in content.metric_records.items():
            assert set(record) <= SCALARS[kind][name]
            assert all(isinstance(v, (int, float)) for v in record.values())  # scalars, never lists
        if kind == STATS:
            assert set(content.array_records) == {"X", "G", "F"}
            for name, array in content.array_records["X"].items():
                assert tuple(array.shape) == (inputs[name],)  # one sum of squares per input channel
            for key in ("G", "F"):
                values, _ = decode(content.array_records[key], weights)  # exactly the weights' shapes
                assert set(values) == set(weights)
        elif kind == MessageType.TRAIN:
            assert set(content.array_records) == {"arrays"}
            update, _ = decode(content.array_records["arrays"], state, candidate)  # kept values, no masks
            assert set(update) == set(state) and not any(k.endswith("@mask") for k in content.array_records["arrays"])
        else:
            assert not content.array_records  # a score and a count, nothing else
            evaluations.append(content.metric_records["validation"])
    total = sum(float(m["num-examples"]) for m in evaluations)
    mean = sum(float(m["num-examples"]) * float(m["accuracy"]) for m in evaluations) / total
    assert result.metrics["validation"].quality == pytest.approx(mean)  # the sample-weighted mean
    assert result.counted().tokens == total
    with pytest.raises(RuntimeError, match="no central calibration"):
        engine.stats._calib()


def test_every_client_together_scores_as_the_central_splits() -> None:
    """The clients' shares of validation and test make up the splits, so a candidate scored on every client
    (magnitude: the same masks as a central engine's) has the central accuracy and loss, on every row."""
    task = DigitsMLP()
    federated = FederatedEngine(task, settings(clients=5, eval_fraction=1.0), "magnitude")
    central = PruningEngine(DigitsMLP(), "magnitude")
    vector = [0.5, 0.9, 0.9, 0.7, 0.3]
    fed = federated.evaluate(vector, splits=("validation", "test"))
    ref = central.evaluate(vector, splits=("validation", "test"))
    for split in ("validation", "test"):
        assert fed.metrics[split].quality == pytest.approx(ref.metrics[split].quality, abs=1e-9)
        assert fed.metrics[split].loss == pytest.approx(ref.metrics[split].loss, rel=1e-5)
        assert fed.metrics[split].count == len(task.split(split)[1])
    assert fed.layers == ref.layers and fed.params == ref.params and fed.flops == ref.flops
    exported = dict(federated.export(vector).named_parameters())["fc2.weight"]
    assert float((exported == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)


def test_a_stage_is_its_share_of_the_sampled_clients() -> None:
    engine = FederatedEngine(DigitsMLP(), settings(clients=8, eval_fraction=0.5, stages=(50, 100, 200)), "magnitude")
    sizes = [len(engine.evaluation_nodes(("validation",), limit)) for limit in (50, 100, 200, None)]
    assert sizes == [1, 2, 4, 4]  # a quarter, a half, all of eval_fraction x 8 clients
    first, last = engine.evaluation_nodes(("validation",), 100), engine.evaluation_nodes(("validation",), 200)
    assert last[: len(first)] == first  # a later stage adds clients to the earlier stage's
    assert len(engine.evaluation_nodes(("validation", "test"), None)) == 8  # a report asks every client
    small = engine.evaluate([0.5] * 5, limit=50).metrics["validation"].count
    assert 0 < small < engine.evaluate([0.5] * 5).metrics["validation"].count


def federated_search(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "search",
        "task": "digits-mlp",
        "search": {"strategy": "random", "budget": 4, "evaluation": "federated"},
        "federated": {"clients": 4},
    }
    for key, value in changes.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task": "code-lm"}, "search.evaluation: federated needs a classification task"),
        ({"search": {"fitness": "kl"}}, "search.fitness: kl compares with the dense model on central data"),
        ({"pruning": {"solver": "sparsegpt"}}, "pruning.solver: sparsegpt reconstructs weights"),
        ({"pruning": {"recovery_steps": 10}}, "pruning.recovery_steps: fine-tunes on central data"),
        ({"federated": {"eval_fraction": 0.1}}, "federated.eval_fraction: 0.1 of 4 clients scores on no client"),
        ({"kind": "federated"}, "search.evaluation: federated is for kind search and metric-search"),
    ],
)
def test_what_federated_evaluation_cannot_do_is_refused_by_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_spec(federated_search(**changes))


def test_a_language_model_search_with_federated_evaluation_is_one_line_exit_2(home: Path) -> None:
    spec = home / "spec.yaml"
    spec.write_text(yaml.safe_dump(federated_search(task="code-lm")))
    result = CliRunner().invoke(app, ["run", str(spec)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a classification task" in lines[0] and "code-lm reports perplexity" in lines[0]


def test_metric_search_and_defaults() -> None:
    spec = parse_spec(federated_search(kind="metric-search", search={"strategy": None, "baselines": ["magnitude"]}))
    assert spec.search.evaluation == "federated" and spec.federated.eval_fraction == 1.0
    assert spec.federated.recovery_rounds == 0
    assert parse_spec({"kind": "search"}).search.evaluation == "central"
