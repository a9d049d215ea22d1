"""A ``kind: benchmark`` job on an ``hf:`` task mapping, end to end on a real local Ray: a tiny Llama
built from a config with text files beside it, each cell a real search job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_models import causal_lm
from mlflow.tracking import MlflowClient

from prunehive.platform.jobs.base import job_runner, start_job
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.workers.tasks.spec import HFTaskSpec

pytestmark = pytest.mark.ray


def test_benchmark_on_an_hf_causal_lm(home: Path, local_ray: None) -> None:
    directory, data = causal_lm(home / "models", "llama")
    task = {
        "hf": str(directory),
        "data": data,
        "seq_len": 16,
        "max_tokens": {"calibration": 512, "validation": 256, "test": 256},
    }
    spec = {
        "kind": "benchmark",
        "task": task,
        "pruning": {"sparsity": 0.5, "metric": "wanda"},
        "search": {"budget": 3},
        "benchmark": {"strategies": ["random"], "seeds": 1, "baselines": ["uniform"]},
        "resources": {"workers": 1},
    }
    store = JobStore(f"sqlite:///{home / 'prunehive.db'}")
    parsed = parse_spec(spec)
    assert parsed.display_name == "tiny-llama-benchmark"
    job_id = start_job(store, parsed)
    result = job_runner(store, job_id, show_progress=False).run()
    json.dumps(result)
    assert result["status"] == "succeeded" and result["quality"] == "perplexity"
    assert result["trials"] == 3 and result["targets"] == [0.5]
    rows = {r["name"]: r for r in result["table"]}
    assert set(rows) == {"random", "uniform"}
    assert rows["random"]["seeds"] == 1 and rows["random"]["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 1.0 < rows["random"]["test_mean"] < 1e4  # a perplexity
    assert "| random | 3 |" in Path(result["report"]).read_text()

    # The cell is a search job on the same typed task, and its run is nested under the benchmark's.
    (cell,) = result["runs"]
    cell_job = store.get_job(cell["job_id"])
    assert cell_job.status == "succeeded"
    cell_spec = parse_spec(cell_job.spec)
    assert isinstance(cell_spec.task, HFTaskSpec) and cell_spec.task.hf == directory.resolve()
    assert set(cell_job.summary["best"]["layers"]) and all(".layers." in n for n in cell_job.summary["best"]["layers"])
    client = MlflowClient(result["tracking_uri"])
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["task"]
    assert "random.0.50.test.perplexity.mean" in parent.data.metrics
