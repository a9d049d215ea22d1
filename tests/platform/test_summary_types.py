"""Typed summaries and entries write the JSON summaries have always had and read it back; ``Quality`` knows
its direction. ``test_json_keys`` round-trips every job kind's real ``run --json`` output, and the store's
trial rows, through these types byte for byte."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest

from prunehive.platform.jobs.report_types import (
    DenseReference,
    FederatedFinal,
    FederatedSummary,
    Tier,
    Traffic,
    summary_from_dict,
)
from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.workers.contracts import Entry, Failed, SplitMetrics, entry_from_dict
from prunehive.workers.quality import Quality


def test_quality_knows_its_direction() -> None:
    accuracy, perplexity = Quality.named("accuracy"), Quality.named("perplexity")
    assert accuracy.higher_is_better and not perplexity.higher_is_better
    assert accuracy.best([0.5, 0.9, 0.7]) == 0.9 and perplexity.best([12.0, 9.5, 30.0]) == 9.5
    assert max([0.5, 0.9], key=lambda v: accuracy.sign * v) == 0.9
    assert max([12.0, 9.5], key=lambda v: perplexity.sign * v) == 9.5
    assert accuracy.fmt(0.876) == "87.6%" and perplexity.fmt(12.346) == "12.35" and accuracy.fmt(None) == "–"
    assert accuracy.spread(0.0123) == "1.2" and perplexity.spread(0.5) == "0.50"
    assert accuracy.scaled(0.5) == 50.0 and perplexity.scaled(7.0) == 7.0
    # a validation objective back in the quality's units: accuracy as it is, minus the mean loss as a perplexity
    assert accuracy.of_objective(0.75) == 0.75 and perplexity.of_objective(-math.log(20.0)) == pytest.approx(20.0)
    assert math.isnan(perplexity.of_objective(-math.inf))


def _entry(candidate_id: int | None = None, expression: str | None = None) -> Entry:
    metrics = {s: SplitMetrics("accuracy", 0.9, 0.3, 0.9) for s in ("validation", "test")}
    return Entry({"fc1": 0.8, "fc2": 0.75}, 0.78, metrics, 1200, 2400, candidate_id=candidate_id, expression=expression)


def _summary(**fields: Any) -> SearchSummary:
    base = {"uniform": _entry(), "owl": Failed("ValueError: no layer to prune")}
    return SearchSummary(
        "ab12", "succeeded", 4, Quality.named("accuracy"), _entry(3), base, "r1", "file:///m", **fields
    )


def test_entries_keep_the_key_order_summaries_have() -> None:
    assert list(_entry(3).to_dict()) == ["layers", "achieved_sparsity", "metrics", "params", "flops", "candidate_id"]
    assert list(_entry(3, "abs(W)").to_dict())[:3] == ["expression", "candidate_id", "layers"]  # a leaderboard row
    best = replace(_entry(3), strategy="random", seed=0).to_dict()  # a benchmark's best
    assert list(best)[-3:] == ["candidate_id", "strategy", "seed"]
    assert entry_from_dict({"error": "boom"}) == Failed("boom") and Failed("boom").to_dict() == {"error": "boom"}


@pytest.mark.parametrize(
    "fields",
    [
        {},  # written before the dense model, the rule and the timing were reported
        {"dense": _entry(), "per_row": False, "rule": "layer-wide", "timing": {"search_seconds": 1.5}},
        {"kind": "metric-search", "leaderboard": [_entry(3, "abs(W)"), _entry(5, "abs(W)*X")]},
        {"pareto_front": [_entry(3), _entry(4)], "evaluation_tokens": 4096, "level_database": {"levels": [0.5]}},
    ],
)
def test_search_summaries_round_trip(fields: dict[str, Any]) -> None:
    summary = _summary(**fields)
    data = json.loads(json.dumps(summary.to_dict()))  # through JSON, as the store and ``run --json`` hold it
    assert SearchSummary.from_dict(data) == summary and summary_from_dict(data) == summary
    assert json.dumps(SearchSummary.from_dict(data).to_dict()) == json.dumps(data)
    assert summary.listed(3) == summary.best and summary.listed(99) is None


def test_federated_tiers_and_dense_reference_round_trip() -> None:
    traffic = Traffic(2_000, 4_000, 8_000, 8_000, 1, client_flops=7_000_000, peak_client_bytes=3_000)
    tiers = [Tier(0.5, 0.49, 0.93, {"fc1": 0.49}), Tier(0.8, 0.79, 0.9, {"fc1": 0.79})]
    summary = FederatedSummary(
        job_id="cd34",
        status="succeeded",
        task="digits-mlp",
        plan="heterogeneous",
        per_row=False,
        rule="layer-wide",
        final=FederatedFinal(0.9, 0.79, 0.88, tiers),
        traffic=traffic,
        uplink_reduction=4.0,
        rounds=[{"round": 1, "test_accuracy": [0.93, 0.9]}],
        mlflow_run_id="r2",
        tracking_uri="file:///m",
        timing={"seconds": 3.5},
        dense_reference=DenseReference(0.95, 0.92, traffic),
        accuracy_gap=0.05,
    )
    data = json.loads(json.dumps(summary.to_dict()))
    assert list(data["final"]) == ["test_accuracy", "sparsity", "client_accuracy", "tiers"]  # no "layers" with tiers
    assert list(data)[-3:] == ["timing", "dense_reference", "accuracy_gap"]
    assert summary_from_dict(data) == summary and json.dumps(summary_from_dict(data).to_dict()) == json.dumps(data)


def test_federated_summaries_stored_before_the_cost_fields_read_them_as_zero() -> None:
    stored = {"bytes_up": 2, "bytes_down": 4, "dense_bytes_up": 8, "dense_bytes_down": 8, "failures": 0}
    assert Traffic.from_dict(stored) == Traffic(2, 4, 8, 8, 0, client_flops=0, peak_client_bytes=0)
    with pytest.raises(KeyError):  # a field without a default stays required
        Traffic.from_dict({k: v for k, v in stored.items() if k != "failures"})
