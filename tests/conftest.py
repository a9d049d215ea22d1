"""Shared fixtures: an isolated model cache (tests never touch ~/.cache), job homes and a local Ray."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from mlflow_seed import seed_mlflow


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("prunehive-cache")
    old = os.environ.get("PRUNEHIVE_CACHE")
    os.environ["PRUNEHIVE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("PRUNEHIVE_CACHE", None)
    else:
        os.environ["PRUNEHIVE_CACHE"] = old


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh PRUNEHIVE_HOME: its own job store and MLflow store, whatever the caller's environment says."""
    monkeypatch.setenv("PRUNEHIVE_HOME", str(tmp_path))
    for name in ("MLFLOW_TRACKING_URI", "PRUNEHIVE_DATABASE_URL", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    seed_mlflow(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Like ``home``, shared by a module's tests: jobs that one test runs, later tests export or evaluate."""
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNEHIVE_HOME", str(path))
        for name in ("MLFLOW_TRACKING_URI", "PRUNEHIVE_DATABASE_URL", "RAY_ADDRESS"):
            mp.delenv(name, raising=False)
        seed_mlflow(path)
        yield path


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A new 2-CPU Ray for the module ("local": never a cluster that `ray start` left on the machine)."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
