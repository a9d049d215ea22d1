"""Federated jobs on ``hf:`` task mappings: a tiny ViT built from a config, with image folders beside it,
through a real Flower simulation on a real local Ray; an ``hf:`` causal LM is refused up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hf_models import causal_lm, vit_classifier

from prunehive.workers.federated.models import start_model, train_rows
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.hf_load import load_image_classifier

PRUNEHIVE = str(Path(sys.executable).parent / "prunehive")


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory, data = vit_classifier(tmp_path_factory.mktemp("hf-fed"))
    return {"hf": str(directory), "data": data}


def run_cli(path: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path.write_text(yaml.safe_dump(spec))
    return subprocess.run(
        [PRUNEHIVE, "run", str(path), "--json"], capture_output=True, text=True, timeout=900, env=os.environ.copy()
    )


def test_clients_start_from_the_loaded_classifier(vit: dict[str, Any]) -> None:
    """An ``hf:`` task brings a trained model: round 1 starts from its weights, not fresh ones; clients
    partition the calibration folder's images as tensors."""
    task = load_task(vit)
    model = start_model(task)
    reference = load_image_classifier(Path(vit["hf"]))
    assert model is not task.model()  # a copy: training a client's model leaves the task's alone
    for name, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    x, y = train_rows(task)
    assert x.shape == (18, 3, 16, 16) and sorted(y.tolist()) == [0] * 6 + [1] * 6 + [2] * 6
    digits = load_task("digits-mlp")
    assert digits._model is None and start_model(digits) is not None and digits._model is None  # trains nothing


@pytest.mark.ray
def test_federated_job_on_an_hf_image_classifier(vit: dict[str, Any], home: Path) -> None:
    spec = {
        "kind": "federated",
        "task": vit,
        "federated": {"clients": 3, "rounds": 2, "local_epochs": 1, "batch_size": 6},
        "pruning": {"sparsity": 0.5, "metric": "wanda"},
        "resources": {"cpus_per_worker": 0.5},
    }
    proc = run_cli(home / "spec.yaml", spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "succeeded" and result["failures"] == 0 and len(result["rounds"]) == 2
    assert result["final"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0.0 <= result["final"]["test_accuracy"] <= 1.0
    task = load_task(vit)
    assert set(result["final"]["layers"]) == set(task.prunable_layers(task.model()))  # the blocks' layers only
    assert result["dense_bytes_up"] > result["bytes_up"] > 0  # clients send only the kept weights


def test_federated_job_on_an_hf_causal_lm_fails_in_one_line(home: Path) -> None:
    directory, data = causal_lm(home / "models", "llama")
    spec = {"kind": "federated", "task": {"hf": str(directory), "data": data}, "federated": {"rounds": 1}}
    proc = run_cli(home / "spec.yaml", spec)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "federated runs need a classification task" in lines[0]
    assert "tiny-llama is a causal language model" in lines[0]
