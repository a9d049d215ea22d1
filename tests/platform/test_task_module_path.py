"""A user's ``module:factory`` task whose module sits next to the spec, run from another directory:
the driver and its local Ray's workers import the module from the spec's directory."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from prunehive.platform.jobs.cluster import cluster_import_note, local_runtime_env

pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[2]
PRUNEHIVE = str(Path(sys.executable).parent / "prunehive")


def test_search_job_imports_the_module_next_to_its_spec(home: Path, tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    module_file = shutil.copy(ROOT / "examples" / "my_task.py", project / "wine_task_next_to_spec.py")
    # The user's trained checkpoint, written next to the module before the job (as their training did).
    loaded = importlib.util.spec_from_file_location("wine_task_next_to_spec", module_file)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    module.train_checkpoint(module.CHECKPOINT, module.wine_data()["train"], steps=100)
    spec = {
        "task": "wine_task_next_to_spec:make_task",
        "pruning": {"sparsity": 0.5},
        "search": {"strategy": "random", "budget": 4, "baselines": ["uniform"]},
        "resources": {"workers": 2, "cpus_per_worker": 0.5},
    }
    (project / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [PRUNEHIVE, "run", str(project / "spec.yaml"), "--json"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "succeeded" and result["trials"] == 4
    assert result["best"]["metrics"]["test"]["accuracy"] > 0.5


def test_runtime_env_and_cluster_note() -> None:
    assert local_runtime_env([]) is None  # no user module beside a spec: Ray starts as before
    env = local_runtime_env(["/specs/a"])
    assert env is not None and env["env_vars"]["PYTHONPATH"].split(os.pathsep)[0] == "/specs/a"
    note = cluster_import_note("ray://head:10001", ["/specs/a"])
    assert "\n" not in note and "/specs/a" in note and "ray://head:10001" in note
