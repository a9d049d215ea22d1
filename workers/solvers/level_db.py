"""The level database: every prunable layer pruned once at each level, on disk, shared by a node's workers.

A search over levels (a level index per layer) then evaluates a candidate by pointing each layer's
weight at a stored tensor instead of pruning again. The database is a directory of safetensors files
(one per layer, one tensor per level) and ``meta.json`` under ``<cache>/levels/``, named by a
fingerprint of everything its tensors depend on: the model's weights, the calibration batches, the
solver, the metric, the granularity, the levels and the damping. It is built under a file lock into a
temporary directory renamed into place at the end, so workers starting together build it once and
never read half of it; every worker then memory-maps the same files (``safe_open``), so the page
cache holds one copy per node.

Levels are built with dense earlier layers: every layer's Hessian comes from the dense model's inputs
(block by block, see ``walk.py``). A layer's entry therefore does not depend on the levels chosen for
the layers before it, which any assignment of levels needs (sequential calibration would tie each
entry to one particular prefix). The search's fitness, evaluated on the assembled model, sees the
interaction; ``prunehive prune`` at one allocation runs the sequential form instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prunehive.workers.tasks.base import Batch
from prunehive.workers.tasks.training import cache_dir, cache_lock

FORMAT = 1  # bump when the layout or the solver's numerics change: old databases are then never read
DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0, 0.05, ..., 0.95

# A builder yields each layer's name and its weights at every level, in order.
Builder = Callable[[], Iterator[tuple[str, list[torch.Tensor]]]]


def levels_dir() -> Path:
    """``<cache>/levels``, the sibling of the model cache."""
    path = cache_dir().parent / "levels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(state: dict[str, torch.Tensor], batches: Sequence[Batch], settings: dict[str, Any]) -> str:
    """Changes whenever a stored tensor could: any weight, any calibration value, any setting."""
    digest = hashlib.sha256(json.dumps({"format": FORMAT, **settings}, sort_keys=True).encode())
    for name in sorted(state):
        _update(digest, name, state[name])
    for i, (x, y) in enumerate(batches):
        _update(digest, f"x{i}", x)
        _update(digest, f"y{i}", y)
    return digest.hexdigest()[:16]


def _update(digest: Any, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes())


@dataclass
class LevelDatabase:
    """An opened database: each layer's weight at each level, memory-mapped."""

    path: Path
    levels: list[float]
    layers: list[str]
    nonzeros: dict[str, list[int]]  # nonzero weights of each layer at each level
    build_seconds: float
    built_here: bool  # whether this process built it (False: it was on disk, or another worker built it)
    _handles: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def open_or_build(cls, name: str, key: str, levels: Sequence[float], build: Builder) -> LevelDatabase:
        """The database ``name-key``: opened if on disk, else built once under a lock and then opened."""
        path = levels_dir() / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}-{key}"
        built = False
        with cache_lock(path):
            if not (path / "meta.json").is_file():
                _build(path, list(levels), build)
                built = True
        return cls.open(path, built_here=built)

    @classmethod
    def open(cls, path: Path, built_here: bool = False) -> LevelDatabase:
        meta = json.loads((path / "meta.json").read_text())
        db = cls(path, meta["levels"], meta["layers"], meta["nonzeros"], meta["build_seconds"], built_here)
        db._handles = {n: safe_open(str(path / f"{meta['files'][n]}"), framework="pt") for n in db.layers}
        return db

    def weight(self, layer: str, index: int) -> torch.Tensor:
        """A read-only view of the file's mapping (never write to it; copy first)."""
        return self._handles[layer].get_tensor(f"level_{index}")

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def describe(self) -> dict[str, Any]:
        """What a job summary reports about the database."""
        return {
            "path": str(self.path),
            "build_seconds": self.build_seconds,
            "bytes": self.bytes,
            "levels": list(self.levels),
            "layers": len(self.layers),
            "built_here": self.built_here,
        }


def _build(path: Path, levels: list[float], build: Builder) -> None:
    start = time.perf_counter()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    layers, files, nonzeros = [], {}, {}
    for i, (name, weights) in enumerate(build()):
        if len(weights) != len(levels):
            raise ValueError(f"layer {name!r}: {len(weights)} weights for {len(levels)} levels")
        files[name] = f"layer-{i:04d}.safetensors"
        tensors = {f"level_{j}": w.detach().cpu().contiguous() for j, w in enumerate(weights)}
        save_file(tensors, str(tmp / files[name]))
        layers.append(name)
        nonzeros[name] = [int(torch.count_nonzero(w)) for w in weights]
    meta = {
        "levels": levels,
        "layers": layers,
        "files": files,
        "nonzeros": nonzeros,
        "build_seconds": time.perf_counter() - start,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
