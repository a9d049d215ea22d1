"""Damaged or unusable task files are found before any worker loads them, each as one message naming the
file: weight files cut short, text splits too short for one window, images that do not open, class
folders the model does not know, and a grayscale model that reads grayscale images."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hf_models import causal_lm, vit_classifier

from prunehive.platform.spec.job import SpecError, load_spec, parse_spec
from prunehive.workers.engine import PruningEngine
from prunehive.workers.tasks import TaskError, load_task
from prunehive.workers.tasks.weight_files import WeightFileError, check_weight_files

SMALL = {"calibration": 1024, "validation": 512, "test": 512}


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory, data = causal_lm(tmp_path_factory.mktemp("llama"), "llama")
    return {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": SMALL}


@pytest.fixture(scope="module")
def vit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory, data = vit_classifier(tmp_path_factory.mktemp("vit"))
    return {"hf": str(directory), "data": data}


def copy_model(source: str, to: Path) -> Path:
    shutil.copytree(source, to)
    return to


def test_a_safetensors_file_cut_short_is_named_when_the_spec_is_read(llama: dict[str, Any], tmp_path: Path) -> None:
    model = copy_model(llama["hf"], tmp_path / "cut")
    weights = model / "model.safetensors"
    size = weights.stat().st_size
    check_weight_files(model)  # the complete copy passes
    os.truncate(weights, size - 1)
    with pytest.raises(
        SpecError, match=rf"^task: hf: '{re.escape(str(weights))}' is cut short: {size - 1:,} bytes, but its tensors"
    ):
        parse_spec({"task": {**llama, "hf": str(model)}})  # what the service answers with a 422
    with pytest.raises(TaskError, match=r"task.hf: .*model.safetensors' is cut short"):
        load_task({**llama, "hf": str(model)})
    os.truncate(weights, 5)
    with pytest.raises(WeightFileError, match="not even a safetensors header"):
        check_weight_files(model)
    weights.write_bytes(struct.pack("<Q", 1000) + b"{}")
    with pytest.raises(WeightFileError, match="its header alone needs 1,008"):
        check_weight_files(model)
    weights.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(WeightFileError, match="its header is not JSON"):
        check_weight_files(model)
    shutil.copy(Path(llama["hf"]) / "model.safetensors", weights)
    with open(weights, "ab") as f:
        f.write(b"\0" * 3)
    with pytest.raises(WeightFileError, match="has 3 bytes after its last tensor"):
        check_weight_files(model)


def test_sharded_and_torch_weights_are_checked(llama: dict[str, Any], tmp_path: Path) -> None:
    model = copy_model(llama["hf"], tmp_path / "sharded")
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(WeightFileError, match=r"model-00002-of-00002.safetensors' does not exist \(named by"):
        check_weight_files(model)
    shutil.copy(model / "model-00001-of-00002.safetensors", model / "model-00002-of-00002.safetensors")
    (model / "unused.safetensors").write_bytes(b"x")  # from_pretrained never reads it, so neither does the check
    check_weight_files(model)
    with open(model / "model-00002-of-00002.safetensors", "r+b") as f:
        f.truncate(100)
    with pytest.raises(WeightFileError, match="model-00002-of-00002.safetensors' is cut short"):
        check_weight_files(model)
    bare = tmp_path / "torch"
    bare.mkdir()
    torch.save({"w": torch.zeros(64, 64)}, bare / "pytorch_model.bin")
    assert zipfile.is_zipfile(bare / "pytorch_model.bin")
    check_weight_files(bare)
    with open(bare / "pytorch_model.bin", "r+b") as f:
        f.truncate((bare / "pytorch_model.bin").stat().st_size // 2)
    with pytest.raises(WeightFileError, match="pytorch_model.bin' is cut short or damaged"):
        check_weight_files(bare)


def test_a_text_split_without_one_window_is_named(llama: dict[str, Any], tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    task = load_task({**llama, "data": {**llama["data"], "validation": str(empty)}})
    with pytest.raises(
        TaskError, match=rf"^task.data.validation: '{re.escape(str(empty))}' has fewer than seq_len \+ 1 = 17 tokens$"
    ):
        task.check_inputs()
    short = tmp_path / "short.txt"
    short.write_text("the model prunes a layer.\n")
    with pytest.raises(TaskError, match=r"task.data.test: '.*short.txt' has fewer than seq_len \+ 1 = 17 tokens"):
        load_task({**llama, "data": {**llama["data"], "test": str(short)}}).check_inputs()
    (tmp_path / "nothing").mkdir()
    with pytest.raises(TaskError, match=r"^task.data.calibration: '.*nothing' holds no text files$"):
        load_task({**llama, "data": {**llama["data"], "calibration": str(tmp_path / "nothing")}}).check_inputs()
    load_task(llama).check_inputs()  # the good splits pass


def test_a_damaged_image_and_unknown_class_folders_are_named(vit: dict[str, Any], tmp_path: Path) -> None:
    load_task(vit).check_inputs()
    folders = tmp_path / "images"
    shutil.copytree(Path(vit["data"]["validation"]).parent, folders)
    data = {split: str(folders / split) for split in ("calibration", "validation", "test")}
    png = folders / "test" / "dog" / "3.png"
    png.write_bytes(png.read_bytes()[:-40])  # cut short: PIL opens it lazily, then the decoder fails
    with pytest.raises(TaskError, match=rf"^task.data.test: '{re.escape(str(png))}' is not a readable image \("):
        load_task({**vit, "data": data}).check_inputs()
    png.write_bytes(b"not an image at all")
    with pytest.raises(
        TaskError, match=rf"^task.data.test: '{re.escape(str(png))}' is not an image \(PIL cannot identify"
    ):
        load_task({**vit, "data": data}).check_inputs()
    png.unlink()
    for i, label in enumerate(("cat", "dog", "bird")):
        (folders / "validation" / label).rename(folders / "validation" / f"class_{i + 5}")
    with pytest.raises(TaskError, match=r"^task.data.validation: class folder 'class_5' is neither one of the model"):
        load_task({**vit, "data": data}).check_inputs()


def test_a_grayscale_model_reads_grayscale_images(tmp_path: Path) -> None:
    directory, data = vit_classifier(tmp_path, channels=1)
    task = load_task({"hf": str(directory), "data": data})
    task.check_inputs()
    x, y = next(iter(task.batches("validation")))
    assert x.shape[1:] == (1, 16, 16) and len(y) == x.shape[0]
    engine = PruningEngine(task, metric="wanda")
    result = engine.evaluate([0.5] * len(engine.layers), splits=("validation",))
    assert result.achieved_sparsity == pytest.approx(0.5, abs=1e-3)
    config = json.loads((directory / "preprocessor_config.json").read_text())
    config.update(image_mean=[0.5] * 3, image_std=[0.5] * 3)  # a processor for RGB beside a 1-channel model
    (directory / "preprocessor_config.json").write_text(json.dumps(config))
    with pytest.raises(TaskError, match=r"normalises 3 channels \(image_mean\), but the model takes 1"):
        load_task({"hf": str(directory), "data": data}).check_inputs()


def test_task_paths_are_relative_to_the_spec_file(
    llama: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As docker-compose resolves paths: from the spec's folder, whatever the current directory is."""
    root, project = Path(llama["hf"]).parent, tmp_path / "project"
    shutil.copytree(root, project)  # the model and its data folder side by side
    task = {"hf": "tiny-llama", "data": {s: os.path.relpath(p, root) for s, p in llama["data"].items()}}
    (project / "spec.yaml").write_text(yaml.safe_dump({"task": {**task, "seq_len": 16}}))
    (project / "task.yaml").write_text(yaml.safe_dump({**task, "seq_len": 16}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd in (elsewhere, project):  # from another folder, and from the spec's own
        monkeypatch.chdir(cwd)
        spec = load_spec(os.path.relpath(project / "spec.yaml", cwd))
        assert spec.task.hf == (project / "tiny-llama").resolve()  # type: ignore[union-attr]
        assert spec.task.data.test == (project / task["data"]["test"]).resolve()  # type: ignore[union-attr]
        from_file = load_task(os.path.relpath(project / "task.yaml", cwd))
        assert from_file.spec.hf == (project / "tiny-llama").resolve()  # type: ignore[attr-defined]
    monkeypatch.chdir(elsewhere)
    with pytest.raises(TaskError, match=r"task.hf: directory '.*elsewhere/tiny-llama' does not exist"):
        load_task(task)  # a mapping given in-line (no file) stays relative to the current directory
