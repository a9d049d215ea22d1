"""The built-in models are the same everywhere: shipped weights match their record, load identically in
separate processes without training, and training itself is deterministic."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import torch

from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.code_corpus import ALL_FILES, CORPUS, LICENSE, read_sources
from prunehive.workers.tasks.code_lm import CodeLMTask
from prunehive.workers.tasks.digits import DigitsCNN, DigitsMLP
from prunehive.workers.tasks.shipped import WEIGHTS, manifest, shipped_path, state_hash, train_fresh

BUILTINS = ("digits-mlp", "digits-cnn", "code-lm", "code-lm-deep")
ROOT = Path(__file__).resolve().parents[2]

# Loads every built-in, and trains a small code-lm, with the thread count given on the command line.
CHILD = """
import json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.code_lm import CodeLMTask
from prunehive.workers.tasks.shipped import state_hash, train_fresh

class Tiny(CodeLMTask):
    train_steps = 3

out = {name: state_hash(load_task(name).model().state_dict()) for name in sys.argv[2:]}
out["tiny"] = state_hash(train_fresh(Tiny()).state_dict())
print(json.dumps(out))
"""


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_the_shipped_weights_without_training(name: str) -> None:
    task = load_task(name)
    assert shipped_path(name, task.fingerprint()) is not None, f"{name}'s recipe changed: run train_builtins.py"
    task.train = lambda *args, **kwargs: pytest.fail("the shipped model must not be retrained")  # type: ignore[method-assign]
    assert state_hash(task.model().state_dict()) == manifest()[name]["sha256"]


def test_builtins_load_identically_in_two_processes_and_tiny_training_repeats() -> None:
    """Two fresh interpreters, with 1 and 2 torch threads: the same weights, equal to the record."""
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(threads), *BUILTINS], stdout=subprocess.PIPE, text=True)
        for threads in (1, 2)
    ]
    outputs = [json.loads(proc.communicate(timeout=300)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs[0] == outputs[1]
    for name in BUILTINS:
        assert outputs[0][name] == manifest()[name]["sha256"]


def test_training_is_deterministic_and_depends_on_the_seed() -> None:
    class Short(DigitsMLP):
        train_steps = 30

    threads = torch.get_num_threads()
    first = state_hash(train_fresh(Short()).state_dict())
    torch.manual_seed(123)  # training reseeds: the global generator's state before it does not matter
    assert state_hash(train_fresh(Short()).state_dict()) == first
    assert state_hash(train_fresh(Short(seed=1)).state_dict()) != first
    assert torch.get_num_threads() == threads and not torch.are_deterministic_algorithms_enabled()  # restored


def test_other_recipes_train_once_and_are_cached(isolated_cache: Path) -> None:
    class Short(DigitsCNN):
        train_steps = 5

    assert shipped_path(Short.name, Short().fingerprint()) is None
    first = Short().model()
    assert (isolated_cache / "models" / f"digits-cnn-{Short().fingerprint()}.pt").is_file()
    again = Short()
    again.train = lambda *args, **kwargs: pytest.fail("should load from the cache")  # type: ignore[method-assign]
    assert state_hash(again.model().state_dict()) == state_hash(first.state_dict())


def test_corpus_is_the_recorded_one_with_its_license() -> None:
    recorded = manifest()["code-lm-corpus"]["files"]
    assert sorted(recorded) == sorted(ALL_FILES)
    for name, src in zip(ALL_FILES, read_sources(ALL_FILES), strict=True):
        assert hashlib.sha256(src).hexdigest() == recorded[name], name
    with tarfile.open(CORPUS, "r:xz") as tar:
        assert b"PYTHON SOFTWARE FOUNDATION LICENSE" in tar.extractfile(LICENSE).read()  # type: ignore[union-attr]


def test_code_lm_fingerprint_covers_the_training_corpus() -> None:
    """The shipped directory is used only for the recipe it was trained from."""
    assert CodeLMTask().fingerprint() == manifest()["code-lm"]["fingerprint"]
    assert CodeLMTask(seed=1).fingerprint() != CodeLMTask().fingerprint()


def test_every_shipped_file_is_package_data() -> None:
    """A file the package-data globs miss would be absent from an installed wheel."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["prunehive.workers.tasks"]
    package = WEIGHTS.parent
    files = {p for p in WEIGHTS.rglob("*") if p.is_file()}
    covered = {p for g in globs for p in package.glob(g)}
    assert files and files <= covered, sorted(map(str, files - covered))
    for entry in (manifest()[name] for name in BUILTINS):
        assert (WEIGHTS / entry["path"]).exists()
