"""Every task form through the CLI: ``prune`` and a small ``run`` search job, on a real local Ray.

Tiny Hugging Face models (a Llama, an OPT, a ViT) built from configs in temporary directories with
text or image files beside them, and the README's worked example (a user's checkpoint and DataLoader).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hf_models import causal_lm, vit_classifier
from typer.testing import CliRunner

from prunehive.platform.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
SMALL = {"calibration": 1024, "validation": 512, "test": 512}


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("hf-jobs")
    out: dict[str, dict[str, Any]] = {}
    for family in ("llama", "opt"):
        directory, data = causal_lm(root / family, family)
        out[family] = {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": SMALL}
    directory, data = vit_classifier(root / "vit")
    out["vit"] = {"hf": str(directory), "data": data}
    return out


def quality_of(task: dict[str, Any]) -> str:
    return "accuracy" if task["hf"].endswith("vit") else "perplexity"


@pytest.mark.parametrize("family", ["llama", "opt", "vit"])
def test_prune_a_task_mapping_file(family: str, tasks: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """``prune --task FILE.yaml``: the file holds the task mapping (or a whole spec with a ``task:``)."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"kind": "search", "task": tasks[family]}))
    args = ["prune", "--task", str(path), "--sparsity", "0.5", "--metric", "wanda", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["quality"] == quality_of(tasks[family])
    assert obj["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert all(".layers." in name for name in obj["layers"])
    assert {"validation", "test"} <= set(obj["metrics"])


def test_prune_names_a_missing_directory(tasks: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(yaml.safe_dump({**tasks["llama"], "hf": str(tmp_path / "no-model")}))
    result = runner.invoke(app, ["prune", "--task", str(path)])
    assert result.exit_code == 2
    assert "task.hf: directory" in result.output and "no-model' does not exist" in result.output


@pytest.mark.ray
@pytest.mark.usefixtures("local_ray")
@pytest.mark.parametrize("family", ["llama", "opt", "vit"])
def test_search_job_on_a_task_mapping(
    family: str, tasks: dict[str, dict[str, Any]], home: Path, tmp_path: Path
) -> None:
    spec = {
        "kind": "search",
        "task": tasks[family],
        "pruning": {"sparsity": 0.5, "metric": "wanda"},
        "search": {"strategy": "random", "budget": 4, "baselines": ["uniform"]},
        "resources": {"workers": 1},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["run", str(path), "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout.strip().splitlines()[-1])
    assert obj["status"] == "succeeded" and obj["trials"] == 4
    assert quality_of(tasks[family]) in obj["best"]["metrics"]["test"]


@pytest.mark.ray
def test_worked_example_checkpoint_and_dataloader(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example as a user lays it out: spec, module and checkpoint in one directory, and
    ``prunehive run`` started there (its own local Ray, whose workers import the module from there)."""
    shutil.copy(ROOT / "examples" / "my_task.py", tmp_path / "my_task.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    pruned = runner.invoke(app, ["prune", "--task", "my_task:make_task", "--sparsity", "0.5", "--json"])
    assert pruned.exit_code == 0, pruned.output
    assert (tmp_path / "wine-mlp.pt").is_file()  # the checkpoint next to the spec
    assert json.loads(pruned.stdout)["metrics"]["test"]["accuracy"] > 0.8
    spec = {
        "task": "my_task:make_task",
        "pruning": {"sparsity": 0.7},
        "search": {"strategy": "random", "budget": 4, "baselines": ["uniform"]},
        "resources": {"workers": 1},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [sys.executable, "-m", "prunehive.platform.cli", "run", "spec.yaml", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    obj = json.loads(proc.stdout.strip().splitlines()[-1])
    assert obj["status"] == "succeeded" and obj["trials"] == 4
