"""``pruning.recovery`` on a structured search, end to end through Ray on a tiny grouped-query Llama: the
best candidate and every baseline are healed alike, each reporting its quality before and after."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from structured_tasks import tiny_llama

from prunehive.platform.jobs.base import start_job
from prunehive.platform.jobs.export import export_candidate
from prunehive.platform.jobs.search.driver import SearchRun
from prunehive.platform.jobs.summary_types import SearchSummary, TrialRow
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.workers.contracts import Entry
from prunehive.workers.structure.hf_export import load_exported

pytestmark = pytest.mark.ray
TESTS = str(Path(__file__).resolve().parents[1])  # structured_tasks.py, imported by the Ray workers too


@pytest.fixture(scope="module", autouse=True)
def ray_with_tests() -> Iterator[None]:
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS, old]))
    sys.path.insert(0, TESTS)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


def spec(**recovery: object) -> dict[str, object]:
    return {
        "kind": "search",
        "task": "structured_tasks:tiny_llama",
        "pruning": {"sparsity": 0.3, "granularity": "structured", "calibration_batches": 2, "recovery": recovery},
        "search": {"strategy": "random", "budget": 4, "seed": 0, "fitness": "kl"},
        "resources": {"workers": 1, "batch": 2},
    }


def test_search_heals_best_and_baselines_alike(home: Path) -> None:
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    job_id = start_job(store, parse_spec(spec(steps=5, lr=3e-3, distill="kl")))
    data = SearchRun(store, job_id, show_progress=False).run()
    assert data["status"] == "succeeded", data
    summary = SearchSummary.from_dict(data)
    named = {"best": summary.best, **summary.baselines}
    assert set(named) == {"best", "uniform", "shortgpt", "combined"}
    kl: dict[str, tuple[float, float]] = {}
    for name, entry in named.items():
        assert isinstance(entry, Entry) and entry.healed is not None, name
        assert (entry.healed.steps, entry.healed.lr, entry.healed.distill) == (5, 3e-3, "kl")
        assert set(entry.healed.metrics) == {"validation", "test"}
        kl[name] = (entry.metrics["validation"].kl or 0.0, entry.healed.metrics["validation"].kl or 0.0)
        assert kl[name][1] != kl[name][0], name  # trained, and scored on its own
    worst = max(kl, key=lambda n: kl[n][0])  # the candidate furthest from dense gets closer
    assert kl[worst][1] < kl[worst][0], kl
    keys = list(data["best"])
    assert keys[-1] == "healed" and keys[:-1] == [k for k in Entry.to_dict(summary.best) if k != "healed"]
    assert SearchSummary.from_dict(data).to_dict() == data


def test_training_aware_selection_then_the_healed_best_exports(home: Path) -> None:
    """``search.train_steps``: each trial is scored after its stage's distillation steps, while the summary's
    best is re-scored one-shot and healed by ``pruning.recovery`` (``baselines: false``: the best alone).
    ``prunehive export --healed`` then writes that healed best as the smaller model, trained as the job's
    worker trained it: reloaded from its directory it scores the summary's healed validation quality."""
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    data = spec(steps=5, lr=3e-3, distill="kl", baselines=False)
    data["search"]["train_steps"] = [20]  # type: ignore[index]
    job_id = start_job(store, parse_spec(data))
    out = SearchRun(store, job_id, show_progress=False).run()
    assert out["status"] == "succeeded", out
    summary = SearchSummary.from_dict(out)
    best = summary.best
    trained = TrialRow.of(next(t for t in store.trials(job_id) if t.candidate_id == best.candidate_id)).result
    assert trained is not None and best.healed is not None
    one_shot_kl, trained_kl = best.metrics["validation"].kl or 0.0, trained.metrics["validation"].kl or 0.0
    assert trained_kl < one_shot_kl
    assert all(isinstance(e, Entry) and e.healed is None for e in summary.baselines.values())

    info = export_candidate(store, job_id, "best", home / "healed", "hf", healed=True)
    recorded = best.healed.metrics["validation"].quality
    assert info["healed"] is True and info["metrics"]["validation"]["perplexity"] == recorded
    assert info["test_metrics"]["perplexity"] == best.healed.metrics["test"].quality
    healed_ppl = tiny_llama().evaluate(load_exported(home / "healed").eval(), "validation").quality
    assert abs(healed_ppl - recorded) < 1e-4
    one_shot = export_candidate(store, job_id, "best", home / "one-shot", "hf")
    assert one_shot["healed"] is False and one_shot["metrics"]["validation"]["perplexity"] != recorded
    other = next(t.candidate_id for t in store.trials(job_id) if t.candidate_id != best.candidate_id)
    with pytest.raises(ValueError, match=f"--healed: candidate {other} was not healed"):
        export_candidate(store, job_id, str(other), home / "other", "hf", healed=True)


def test_recovery_is_for_structured_granularities() -> None:
    bad = spec(steps=5)
    bad["pruning"]["granularity"] = "unstructured"  # type: ignore[index]
    with pytest.raises(SpecError, match="pruning.recovery"):
        parse_spec(bad)
    with pytest.raises(SpecError, match="steps"):
        parse_spec(spec(steps=0))


def test_train_steps_need_a_structured_granularity_and_one_count_per_stage() -> None:
    bad = spec()
    bad["search"]["train_steps"] = [5]  # type: ignore[index]
    bad["pruning"]["granularity"] = "unstructured"  # type: ignore[index]
    bad["pruning"].pop("recovery")  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match="search.train_steps: training-aware selection needs granularity"):
        parse_spec(bad)
    staged = spec()
    staged["pruning"].pop("recovery")  # type: ignore[attr-defined]
    staged["search"].update(strategy="evopress", fidelity=[64, 256], survivors=[2, 1], train_steps=[5])  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match=r"give 2 step count\(s\)"):
        parse_spec(staged)
