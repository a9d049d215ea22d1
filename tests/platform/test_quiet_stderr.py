"""stderr redirected to a file holds prunehive's own lines only: no MLflow INFO lines, no transformers
progress bars, no Flower warnings about the job's deliberate choices, and no colour codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hf_models import vit_classifier

NOISE = (
    "INFO",  # MLflow's "Creating initial MLflow database tables...", alembic's migrations
    "Loading weights",  # transformers' progress bar
    "fraction_evaluate",  # Flower: the server evaluates the global model itself
    "DEPRECATED FEATURE",  # Flower: run_simulation
    "Warning",  # DeprecationWarning and friends, which Flower's import turns on process-wide
    "\x1b[",  # colour codes in a file
    "Traceback",
)


def cli(args: list[str], home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRUNEHIVE_HOME": str(home)}
    for name in ("MLFLOW_TRACKING_URI", "PRUNEHIVE_DATABASE_URL", "RAY_ADDRESS", "MLFLOW_LOGGING_LEVEL"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "prunehive.platform.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def noise_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(word in line for word in NOISE)]


@pytest.mark.ray
def test_prune_and_a_federated_run_keep_stderr_quiet(tmp_path: Path) -> None:
    directory, data = vit_classifier(tmp_path / "vit")
    task = {"hf": str(directory), "data": data}
    pruned = cli(["prune", "--task", json.dumps(task), "--metric", "wanda", "--json"], tmp_path / "h1", tmp_path)
    assert pruned.returncode == 0, pruned.stderr[-2000:]
    assert noise_in(pruned.stderr) == [] and json.loads(pruned.stdout)["quality"] == "accuracy"
    spec = {
        "kind": "federated",
        "task": task,
        "federated": {"clients": 2, "rounds": 1, "local_epochs": 1},
        "pruning": {"sparsity": 0.5},
    }
    (tmp_path / "federated.yaml").write_text(yaml.safe_dump(spec))
    ran = cli(["run", "federated.yaml", "--json"], tmp_path / "h2", tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert json.loads(ran.stdout.strip().splitlines()[-1])["status"] == "succeeded"
    assert noise_in(ran.stderr) == [], ran.stderr[-2000:]
    assert ran.stderr.splitlines()[0].startswith("job ")  # prunehive's own lines stay
