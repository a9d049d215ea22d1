"""Shared fixtures: an isolated model cache so tests never touch the user's ~/.cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


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
