"""From a job spec to simulation settings: plans, tiers, and a fixed allocation taken from a search job."""

from __future__ import annotations

from pathlib import Path

import pytest

from prunehive.platform.jobs.federated.driver import settings_for
from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.workers.contracts import Entry, SplitMetrics
from prunehive.workers.federated.simulation import build_strategy
from prunehive.workers.quality import Quality

LAYERS = {"fc1": 0.7, "fc2": 0.9, "fc3": 0.9, "fc4": 0.8, "fc5": 0.3}


@pytest.fixture()
def store(tmp_path: Path) -> JobStore:
    return JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


def search_job(store: JobStore, status: str = "succeeded") -> str:
    job_id = store.create_job("search", "digits-mlp-evolution", parse_spec({"kind": "search"}).model_dump(mode="json"))
    store.set_status(job_id, "running")
    split = SplitMetrics("accuracy", 0.9, 0.3, 0.9)
    best = Entry(LAYERS, 0.85, {"validation": split, "test": split}, 1000, 2000, candidate_id=7)
    summary = SearchSummary(job_id, "succeeded", 8, Quality.named("accuracy"), best, {}, "run", "file:///mlruns")
    store.set_summary(job_id, summary.to_dict())
    store.set_status(job_id, status)
    return job_id


def test_fixed_plan_takes_the_best_allocation_of_a_search_job(store: JobStore) -> None:
    job_id = search_job(store)
    spec = parse_spec({"kind": "federated", "pruning": {"plan": "fixed", "from_job": job_id[:8]}})
    settings = settings_for(spec, store)
    assert settings.plan == "fixed" and settings.allocation == LAYERS
    strategy = build_strategy(settings, lambda record: None)
    masks = strategy.plan.masks(1, strategy.scores)
    assert masks is not None
    for name, sparsity in LAYERS.items():
        kept = masks[0][f"{name}.weight"].float().mean().item()
        assert 1.0 - kept == pytest.approx(sparsity, abs=2e-3)


def test_an_unfinished_search_job_is_refused(store: JobStore) -> None:
    job_id = search_job(store, status="failed")
    spec = parse_spec({"kind": "federated", "pruning": {"from_job": job_id}})
    with pytest.raises(ValueError, match=r"pruning\.from_job: job .* is not a finished search job"):
        settings_for(spec, store)


def test_dense_reference_and_tiers(store: JobStore) -> None:
    spec = parse_spec(
        {"kind": "federated", "federated": {"tiers": [0.95, 0.5, 0.8]}, "pruning": {"plan": "heterogeneous"}}
    )
    assert settings_for(spec, store).targets == [0.5, 0.8, 0.95]
    dense = settings_for(spec, store, dense=True)
    assert dense.plan == "dense" and dense.targets == [0.0]
