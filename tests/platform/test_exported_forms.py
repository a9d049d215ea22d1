"""One exported form of a candidate: the ``pruned_model`` a search logs to MLflow and the ``model.pt`` that
``prunehive export`` writes for the same best candidate hold the same tensors under the same names.

Real small jobs on a real local Ray with a real MLflow store: an unstructured job that fine-tunes its
candidates (so both files are the fine-tuned model) and a channel job (both the physically smaller model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pytorch
import pytest
import torch
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.workers.tasks import load_task

runner = CliRunner()


def invoke(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def logged_state(summary: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The state dict of the ``pruned_model`` the job logged under its parent run."""
    client = MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["mlflow_run_id"])
    found = client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{summary['mlflow_run_id']}'"
    )
    models = [m for m in found if m.name == "pruned_model"]
    assert len(models) == 1, [m.name for m in found]
    model = mlflow.pytorch.load_model(models[0].artifact_location)
    return dict(model.state_dict())


@pytest.mark.ray
@pytest.mark.parametrize(
    ("task", "pruning"),
    [
        ("digits-mlp", {"metric": "wanda", "recovery_steps": 3}),
        ("digits-cnn", {"metric": "magnitude", "granularity": "channel"}),
    ],
)
def test_logged_model_and_export_hold_the_same_weights(
    task: str, pruning: dict[str, Any], home: Path, local_ray: None, tmp_path: Path
) -> None:
    spec = {
        "kind": "search",
        "task": task,
        "pruning": {"sparsity": 0.5, **pruning},
        "search": {"strategy": "random", "budget": 3, "baselines": ["uniform"]},
        "resources": {"workers": 1},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    summary = invoke("run", str(tmp_path / "spec.yaml"), "--json")
    assert summary["status"] == "succeeded"
    out = tmp_path / "exported"
    invoke("export", summary["job_id"], "--format", "torch", "--out", str(out), "--json")
    exported = torch.load(out / "model.pt", weights_only=True)
    logged = logged_state(summary)
    assert list(exported) == list(logged)  # plain names: no weight_orig / weight_mask
    for name, tensor in exported.items():
        assert tensor.shape == logged[name].shape, name
        assert torch.equal(tensor, logged[name]), name
    weights = [t for n, t in exported.items() if n.endswith("weight") and t.dim() > 1]
    if pruning.get("granularity") == "channel":  # physically smaller: fewer parameters, no zeroed rows
        dense = load_task(task).model().state_dict()
        assert sum(t.numel() for t in exported.values()) < sum(t.numel() for t in dense.values())
    else:
        zeros = sum(int((t == 0).sum()) for t in weights) / sum(t.numel() for t in weights)
        assert zeros > 0.3
