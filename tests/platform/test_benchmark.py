"""Benchmark jobs end to end on a real local Ray, a real SQLite job store and a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from prunehive.bench.quality import quality_spec
from prunehive.platform.cli import app
from prunehive.platform.jobs.base import job_runner, start_job
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.platform.store.jobs import JobStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def tiny_spec() -> dict[str, Any]:
    return {
        "kind": "benchmark",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.9},
        "search": {"budget": 8},
        "benchmark": {"strategies": ["evolution", "random"], "seeds": 2, "options": {"evolution": {"population": 4}}},
        "resources": {"workers": 2},
    }


@pytest.mark.ray
def test_benchmark_job_end_to_end(home: Path, local_ray: None) -> None:
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    job_id = start_job(store, parse_spec(tiny_spec()))
    result = job_runner(store, job_id, show_progress=False).run()
    json.dumps(result)
    assert result["status"] == "succeeded" and result["kind"] == "benchmark"
    assert result["trials"] == 4 * 8 and result["targets"] == [0.9]
    strategies = {r["name"]: r for r in result["table"] if r["kind"] == "strategy"}
    heuristics = {r["name"] for r in result["table"] if r["kind"] == "heuristic"}
    assert set(strategies) == {"evolution", "random"} and heuristics == {"uniform", "global", "erk", "owl"}
    for row in strategies.values():
        assert row["seeds"] == 2 and row["evaluations"] == 8 and len(row["test_values"]) == 2
        assert row["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3)
        assert 0.0 < row["test_mean"] <= 1.0 and row["test_std"] is not None
    assert set(result["baselines"]) == {"uniform", "global", "erk", "owl"}
    job = store.get_job(job_id)
    assert job.status == "succeeded" and job.summary and job.summary["report"] == result["report"]
    report = Path(result["report"]).read_text()
    assert "| evolution | 8 |" in report and "heuristic: erk" in report

    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["prunehive.kind"] == "benchmark"
    assert "evolution.0.90.test.accuracy.mean" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "summary.json", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/best_so_far_0.90.png", "plots/allocation_0.90.png", "plots/quality_vs_sparsity.png"}

    # Every strategy/seed is its own run in the benchmark's experiment, nested under the benchmark's run.
    cells = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
        max_results=100,
    )
    assert len(cells) == 4 == len(result["runs"])
    assert {(r.data.params["strategy"], r.data.params["seed"]) for r in cells} == {
        (s, str(seed)) for s in ("evolution", "random") for seed in (0, 1)
    }
    for run in cells:
        assert run.info.status == "FINISHED"
        assert {"sparsity.fc1", "sparsity.fc5"} <= set(run.data.params)
        assert "best.test.accuracy" in run.data.metrics
        assert len(client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"))
    assert all(store.get_job(r["job_id"]).status == "succeeded" for r in result["runs"])


@pytest.mark.ray
def test_quality_suite_through_the_cli(home: Path, local_ray: None) -> None:
    args = ["bench", "--suite", "quality", "--task", "digits-mlp", "--budget", "4", "--seeds", "1"]
    result = CliRunner().invoke(app, [*args, "--strategies", "random", "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["suite"] == "quality"
    (task,) = obj["tasks"]
    assert task["task"] == "digits-mlp" and task["budget"] == 4 and task["targets"] == [0.8, 0.9, 0.95]
    assert {r["name"] for r in task["table"]} == {"random", "uniform", "global", "erk", "owl"}
    assert Path(task["report"]).exists()


def test_examples_match_the_quality_suite() -> None:
    for task in ("digits-mlp", "code-lm"):
        example = parse_spec(yaml.safe_load((EXAMPLES / f"{task}-benchmark.yaml").read_text()))
        assert example == parse_spec(quality_spec(task))


def test_benchmark_spec_defaults_and_errors() -> None:
    spec = parse_spec({"kind": "benchmark", "task": "digits-mlp", "pruning": {"sparsity": 0.8}})
    bench = spec.benchmark
    assert bench.strategies == ["evolution", "bayesian", "rl", "random"] and bench.seed_list == [0, 1, 2]
    assert bench.sparsities == [0.8] and bench.baselines == ["uniform", "global", "erk", "owl"]
    assert spec.display_name == "digits-mlp-benchmark"
    assert parse_spec(spec.model_dump(mode="json")) == spec  # the stored copy parses again
    assert parse_spec({"kind": "benchmark", "benchmark": {"seeds": [3, 7]}}).benchmark.seed_list == [3, 7]
    errors = {
        "benchmark.strategies: 'evolve' is not one of evolution, nsga2, bayesian, rl, random": {
            "benchmark": {"strategies": ["evolve"]}
        },
        "benchmark.strategies: list at least one strategy": {"benchmark": {"strategies": []}},
        "benchmark.baselines: 'magnitude' is not one of uniform": {"benchmark": {"baselines": ["magnitude"]}},
        "benchmark.seeds: a count of seeds must be between 1 and 100, not 0": {"benchmark": {"seeds": 0}},
        "benchmark.sparsities: sparsity 1.5 is outside": {"benchmark": {"sparsities": [0.5, 1.5]}},
        "benchmark.options: 'rl' is not in benchmark.strategies": {
            "benchmark": {"strategies": ["random"], "options": {"rl": {}}}
        },
        "search.options: a benchmark takes per-strategy options": {"search": {"options": {"population": 4}}},
        "search.strategy: a benchmark runs benchmark.strategies": {"search": {"strategy": "nsga2"}},
        "benchmark.sparsities: give either pruning.flops_budget": {
            "pruning": {"flops_budget": 0.5},
            "benchmark": {"sparsities": [0.5]},
        },
        "benchmark.colour: unknown field": {"benchmark": {"colour": "red"}},
    }
    for message, fields in errors.items():
        with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(".", r"\.")):
            parse_spec({"kind": "benchmark", **fields})
