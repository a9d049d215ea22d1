"""The level database: every prunable layer pruned once at each level, on disk, shared by a node's workers.

A search over levels (a level index per layer) then evaluates a candidate by pointing each layer's
weight at a stored level instead of pruning again. The database is a directory of safetensors files
(one per layer) and ``meta.json`` under ``<cache>/levels/``, named by a fingerprint of everything its
tensors depend on: the model's weights, the calibration batches, the solver, the metric, the
granularity, the levels and the damping. It is built under a file lock into a temporary directory
renamed into place at the end, so workers starting together build it once and never read half of it;
every worker then memory-maps the same files (``safe_open``), so the page cache holds one copy per node.

Each level is stored compact, as its kept values plus a bitmask (``level_codec.py``): about 0.55 of the
model's bytes per level at the default levels instead of a full copy. Reading a level decodes it (one
pass over the layer's weights); each worker keeps the levels it decoded last, up to ``cache_bytes``, so
a small model's whole database is decoded once and a large one's decoding is dwarfed by its forward
passes. The ``dense`` layout (every level a full tensor, read with no copy) is kept to compare against.

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
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from prunehive.workers.solvers.build_progress import LayerProgress
from prunehive.workers.solvers.level_codec import decode, encode
from prunehive.workers.tasks.base import Batch
from prunehive.workers.tasks.training import cache_dir, cache_lock

# Bump when the layout or the solver's numerics change. It is part of every fingerprint, so a database
# of an older format is never read: it is rebuilt under a new name, and building the new one removes the
# old directories of the same name. Format 1 stored every level dense; 2 stores kept values + bitmask.
FORMAT = 2
LAYOUTS = ("compact", "dense")
DEFAULT_LEVELS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20))  # 0.0, 0.05, ..., 0.95
DECODED_CACHE_BYTES = 64 * 2**20  # decoded levels a worker keeps (LRU); a few MB hold a small model's all

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
    layout: str = "compact"
    shapes: dict[str, list[int]] = field(default_factory=dict)
    cache_bytes: int = DECODED_CACHE_BYTES
    _handles: dict[str, Any] = field(default_factory=dict, repr=False)
    _views: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False)
    _decoded: OrderedDict[tuple[str, int], torch.Tensor] = field(default_factory=OrderedDict, repr=False)
    _decoded_bytes: int = field(default=0, repr=False)

    @classmethod
    def open_or_build(
        cls,
        name: str,
        key: str,
        levels: Sequence[float],
        build: Builder,
        total: int,
        layout: str = "compact",
        cache_bytes: int = DECODED_CACHE_BYTES,
    ) -> LevelDatabase:
        """The database ``name-key`` (``total`` layers): opened if on disk, else built once under a lock."""
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ("-dense" if layout == "dense" else "")
        path = levels_dir() / f"{stem}-{key}"
        built = False
        with cache_lock(path):
            if not (path / "meta.json").is_file():
                _build(path, list(levels), build, LayerProgress(f"level database {name}", total), layout)
                built = True
        if built:
            _remove_old_formats(stem)
        return cls.open(path, built_here=built, cache_bytes=cache_bytes)

    @classmethod
    def open(cls, path: Path, built_here: bool = False, cache_bytes: int = DECODED_CACHE_BYTES) -> LevelDatabase:
        meta = json.loads((path / "meta.json").read_text())
        db = cls(
            path,
            meta["levels"],
            meta["layers"],
            meta["nonzeros"],
            meta["build_seconds"],
            built_here,
            meta.get("layout", "dense"),  # format 1 had dense levels only
            meta.get("shapes", {}),
            cache_bytes,
        )
        db._handles = {n: safe_open(str(path / f"{meta['files'][n]}"), framework="pt") for n in db.layers}
        return db

    def weight(self, layer: str, index: int) -> torch.Tensor:
        """The layer's weight at level ``index``, read-only: a view of the file's mapping (dense layout) or a
        decoded tensor this database may hand out again (compact). Never write to it; copy first."""
        if self.layout == "dense":
            return self._view(layer, f"level_{index}")
        key = (layer, index)
        hit = self._decoded.get(key)
        if hit is not None:
            self._decoded.move_to_end(key)
            return hit
        mask = self._view(layer, f"mask_{index}")
        weight = decode(mask, self._view(layer, f"values_{index}"), self.shapes[layer])
        if mask.numel():  # a new tensor (a level with nothing pruned is read from the mapping itself)
            self._remember(key, weight)
        return weight

    def _view(self, layer: str, tensor: str) -> torch.Tensor:
        """A stored tensor as a view of the mapping, looked up once (the views cost no memory until read)."""
        key = (layer, tensor)
        if key not in self._views:
            self._views[key] = self._handles[layer].get_tensor(tensor)
        return self._views[key]

    def _remember(self, key: tuple[str, int], weight: torch.Tensor) -> None:
        size = weight.numel() * weight.element_size()
        if size > self.cache_bytes:
            return
        self._decoded[key] = weight
        self._decoded_bytes += size
        while self._decoded_bytes > self.cache_bytes:
            _, old = self._decoded.popitem(last=False)
            self._decoded_bytes -= old.numel() * old.element_size()

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def describe(self) -> dict[str, Any]:
        """What a job summary reports about the database."""
        return {
            "path": str(self.path),
            "build_seconds": self.build_seconds,
            "bytes": self.bytes,
            "layout": self.layout,
            "levels": list(self.levels),
            "layers": len(self.layers),
            "built_here": self.built_here,
        }


def _build(path: Path, levels: list[float], build: Builder, progress: LayerProgress, layout: str) -> None:
    start = time.perf_counter()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    layers, files, nonzeros, shapes = [], {}, {}, {}
    for i, (name, weights) in enumerate(build()):
        if len(weights) != len(levels):
            raise ValueError(f"layer {name!r}: {len(weights)} weights for {len(levels)} levels")
        files[name] = f"layer-{i:04d}.safetensors"
        tensors: dict[str, torch.Tensor] = {}
        counts = []
        for j, w in enumerate(weights):
            if layout == "dense":
                tensors[f"level_{j}"] = w.detach().cpu().contiguous()
                counts.append(int(torch.count_nonzero(w)))
            else:
                tensors[f"mask_{j}"], tensors[f"values_{j}"] = encode(w)
                counts.append(tensors[f"values_{j}"].numel())
        save_file(tensors, str(tmp / files[name]))
        layers.append(name)
        nonzeros[name] = counts
        shapes[name] = list(weights[0].shape)
        progress.step(name)
    meta = {
        "format": FORMAT,
        "layout": layout,
        "levels": levels,
        "layers": layers,
        "files": files,
        "shapes": shapes,
        "nonzeros": nonzeros,
        "build_seconds": time.perf_counter() - start,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    size = sum(f.stat().st_size for f in path.iterdir())
    progress.finish(f"{len(layers)} layers x {len(levels)} levels, {size / 1e6:.1f} MB ({layout})")


def _remove_old_formats(stem: str) -> None:
    """Delete this name's databases of an older format: no reader opens them, and dense ones are large
    (a newer format's are left to the release that reads them)."""
    pattern = re.compile(re.escape(stem) + r"-[0-9a-f]{16}")
    for old in levels_dir().iterdir():
        if not pattern.fullmatch(old.name) or not (old / "meta.json").is_file():
            continue
        try:
            stale = int(json.loads((old / "meta.json").read_text()).get("format", 1)) < FORMAT
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(old, ignore_errors=True)
            old.with_name(old.name + ".lock").unlink(missing_ok=True)
