"""The built-in tasks' trained weights, shipped with the package, so every machine starts from one model.

Training a built-in is deterministic on one machine and library version (fixed seeds, one thread,
``torch.use_deterministic_algorithms``), but floating-point kernels differ between CPUs and between
torch or transformers releases, so the same recipe trained elsewhere can end in other weights. The
package therefore carries the weights trained once for seed 0 under ``weights/``, with
``weights/manifest.json`` recording, per task, the recipe fingerprint they were trained from and a hash
of their tensors. A built-in whose fingerprint matches the manifest loads them (nothing is trained or
cached); any other seed or recipe is trained on first use and cached under PRUNEHIVE_CACHE.
``scripts/train_builtins.py`` retrains them and rewrites or checks the manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunehive.workers.tasks.training import seed_everything

if TYPE_CHECKING:
    from prunehive.workers.tasks.base import Task

WEIGHTS = Path(__file__).with_name("weights")
MANIFEST = WEIGHTS / "manifest.json"


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes, in name order: equal iff the weights are."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@cache
def manifest() -> dict[str, dict[str, Any]]:
    """What was shipped, per task: ``fingerprint``, ``path`` (under ``weights/``), ``sha256`` of the tensors."""
    if not MANIFEST.is_file():
        return {}
    data: dict[str, dict[str, Any]] = json.loads(MANIFEST.read_text())
    return data


def shipped_path(name: str, fingerprint: str) -> Path | None:
    """The shipped weights of built-in ``name`` if they were trained from exactly this recipe, else None."""
    entry = manifest().get(name)
    if entry is None or entry.get("fingerprint") != fingerprint:
        return None
    path = WEIGHTS / str(entry["path"])
    return path if path.exists() else None


def check_shipped(name: str, state: Mapping[str, torch.Tensor]) -> None:
    """Fail loudly when loaded shipped weights are not the ones recorded: a damaged or replaced file."""
    expected = manifest()[name]["sha256"]
    if state_hash(state) != expected:
        raise RuntimeError(f"the shipped weights of {name!r} under {WEIGHTS} do not match their recorded hash")


@contextmanager
def deterministic(threads: int = 1) -> Iterator[None]:
    """One thread and deterministic algorithms for the block, restored afterwards: a thread count changes
    how reductions are split, so the last bits of the weights, which a long training run amplifies."""
    old_threads = torch.get_num_threads()
    old_mode = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_mode, warn_only=old_warn)
        torch.set_num_threads(old_threads)


def train_fresh(task: Task) -> nn.Module:
    """The task's architecture trained by its own recipe from its seed, deterministically (not cached)."""
    seed_everything(task.seed)
    model = task.architecture()
    with deterministic():
        task.train(model, task.train_steps)
    return model
