"""Bad task files through the CLI: ``prune`` and ``run`` both answer with one line naming the file and exit
code 2, and ``run`` leaves no job row (the checks run before the job exists and before Ray starts)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hf_models import causal_lm, vit_classifier
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.settings import default_database_url
from prunehive.platform.store.jobs import JobStore

runner = CliRunner()
SMALL = {"calibration": 1024, "validation": 512, "test": 512}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("bad-inputs")
    directory, data = causal_lm(root / "llama")
    llama = {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": SMALL}
    directory, data = vit_classifier(root / "vit")
    return {"llama": llama, "vit": {"hf": str(directory), "data": data}}


def cut_weights(task: dict[str, Any], tmp: Path) -> tuple[dict[str, Any], str]:
    model = Path(shutil.copytree(task["hf"], tmp / "cut-model"))
    os.truncate(model / "model.safetensors", (model / "model.safetensors").stat().st_size // 2)
    return {**task, "hf": str(model)}, f"'{model / 'model.safetensors'}' is cut short"


def empty_text(task: dict[str, Any], tmp: Path) -> tuple[dict[str, Any], str]:
    (tmp / "empty.txt").write_text("")
    message = f"task.data.calibration: '{tmp / 'empty.txt'}' has fewer than seq_len + 1 = 17 tokens"
    return {**task, "data": {**task["data"], "calibration": str(tmp / "empty.txt")}}, message


def _copied_images(task: dict[str, Any], tmp: Path) -> tuple[dict[str, Any], Path]:
    folders = Path(shutil.copytree(Path(task["data"]["test"]).parent, tmp / "images"))
    return {**task, "data": {s: str(folders / s) for s in ("calibration", "validation", "test")}}, folders


def damaged_png(task: dict[str, Any], tmp: Path) -> tuple[dict[str, Any], str]:
    task, folders = _copied_images(task, tmp)
    png = folders / "validation" / "dog" / "3.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    return task, f"task.data.validation: '{png}' is not a readable image"


def unknown_classes(task: dict[str, Any], tmp: Path) -> tuple[dict[str, Any], str]:
    task, folders = _copied_images(task, tmp)
    for split in ("calibration", "validation", "test"):
        for i, label in enumerate(("cat", "dog", "bird")):
            (folders / split / label).rename(folders / split / f"class_{i + 5}")
    return task, "task.data.calibration: class folder 'class_5' is neither one of the model's labels"


CASES: dict[str, tuple[str, Callable[[dict[str, Any], Path], tuple[dict[str, Any], str]]]] = {
    "cut-weights": ("llama", cut_weights),
    "empty-text": ("llama", empty_text),
    "damaged-png": ("vit", damaged_png),
    "unknown-classes": ("vit", unknown_classes),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_task_files_are_one_line_and_no_job(
    case: str, models: dict[str, dict[str, Any]], home: Path, tmp_path: Path
) -> None:
    family, damage = CASES[case]
    task, message = damage(models[family], tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"task": task, "search": {"strategy": "random", "budget": 2}}))
    for args in (["prune", "--task", str(spec), "--metric", "wanda"], ["run", str(spec)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, result.stderr)
    assert JobStore(default_database_url()).list_jobs() == []
