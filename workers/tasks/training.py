"""What tasks share besides their interface: seeding, the model cache, and where training batches come from."""

from __future__ import annotations

import fcntl
import os
import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so training and scoring are repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cache_dir() -> Path:
    """Where trained dense models live: PRUNEHIVE_CACHE or ~/.cache/prunehive."""
    root = os.environ.get("PRUNEHIVE_CACHE") or Path.home() / ".cache" / "prunehive"
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def cache_lock(path: Path) -> Iterator[None]:
    """An exclusive lock next to ``path``: two workers starting together train a model once."""
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def as_batch(item: object) -> Batch:
    """A loader's item as ``(inputs, targets)``; DataLoaders yield lists, and anything else is a mistake."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise TypeError(f"a task's batches must be (inputs, targets) pairs, got {type(item).__name__}")


def sampled(data: Batch, size: int, gen: torch.Generator) -> Iterator[Batch]:
    """Endless random mini-batches (with replacement) of in-memory rows, as the built-in demos train."""
    x, y = data
    while True:
        idx = torch.randint(0, len(x), (size,), generator=gen)
        yield x[idx], y[idx]


def cycled(loader: Callable[[], Iterable[object]]) -> Iterator[Batch]:
    """Endless batches from a loader, restarted when it runs out (an epoch of a DataLoader)."""
    while True:
        empty = True
        for item in loader():
            empty = False
            yield as_batch(item)
        if empty:
            raise ValueError("the task's training batches are empty")


class CachedStream:
    """Batches from ``source()``, kept after the first complete pass if they total at most ``limit`` bytes
    (``None``: no limit, for splits already capped), so every later pass skips reading and decoding."""

    def __init__(self, source: Callable[[], Iterable[Batch]], limit: int | None) -> None:
        self._source = source
        self._limit = limit
        self._cached: list[Batch] | None = None

    def __iter__(self) -> Iterator[Batch]:
        if self._cached is not None:
            yield from self._cached
            return
        kept: list[Batch] | None = []
        size = 0
        for batch in self._source():
            if kept is not None:
                size += sum(t.numel() * t.element_size() for t in batch)
                if self._limit is not None and size > self._limit:
                    kept = None
                else:
                    kept.append(batch)
            yield batch
        if kept is not None:
            self._cached = kept
