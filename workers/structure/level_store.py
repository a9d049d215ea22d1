"""The structured level database: every consumer (``o_proj`` for KV groups, ``down_proj`` for MLP
channels) refitted by least squares at every level of its sublayer, on disk, shared by a node's workers.

A structured search scores many level vectors, and each sublayer has a handful of levels (k of its
least important units removed), so a consumer's refit depends only on its own level: it is fitted once
per (consumer, units removed) from the dense model's inputs and stored. This is the unstructured level
database (``workers/solvers/level_db.py``) with consumers for layers and units removed for levels, and
it is that class that stores it: the same ``<cache>/levels`` root, the same per-node file lock (workers
starting together fit it once), the same safetensors files read memory-mapped. Consumers are grouped
into one database per (kind, units removed at each level), as a database holds one level list.

The key hashes the model's weights and the calibration batches with every setting a refit depends on
(importance, granularity, each consumer's unit order and levels, the damping, the seed), so another
model, calibration, seed or granularity never reads these fits. The default layout is ``dense``: a
refit is dense in its kept columns, so the compact codec would save only the removed columns' share,
while the dense layout hands out views of the mapping (no copy; one copy per node in the page cache)
that are bit for bit the fits least squares returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunehive.workers.solvers.level_db import LevelDatabase, fingerprint, levels_dir
from prunehive.workers.structure.apply import down_keep, o_keep
from prunehive.workers.structure.plan import BlockPlan
from prunehive.workers.structure.reconstruct import DAMP, least_squares
from prunehive.workers.structure.stats import BlockStats
from prunehive.workers.structure.units import BlockUnits
from prunehive.workers.tasks.base import Batch

# Part of the key: bump when a refit's numerics change, so older fits are never read.
STORE_FORMAT = 1
DEFAULT_LAYOUT = "dense"


def kept_units(order: Sequence[int], removed: int) -> tuple[int, ...]:
    """The units a level keeps: all but the ``removed`` least important (``order``: least important
    first), in the model's order."""
    return tuple(sorted(order[removed:]))


def refit(weight: torch.Tensor, stats: BlockStats, kind: str, keep: torch.Tensor) -> torch.Tensor | None:
    """``weight`` (an ``o_proj`` or ``down_proj``) refitted to its kept input columns ``keep`` on the
    dense inputs of ``stats``; None where the consumer never ran on the calibration batches."""
    gram = stats.o_gram if kind == "o_proj" else stats.down_gram
    return None if gram is None else least_squares(weight, gram, keep)


@dataclass(frozen=True)
class ConsumerLevels:
    """One consumer weight and the units its sublayer removes at each stored level (all > 0)."""

    name: str  # "<block>.self_attn.o_proj.weight" or "<block>.mlp.down_proj.weight"
    kind: str  # "o_proj" | "down_proj"
    block: BlockUnits
    order: tuple[int, ...]  # the sublayer's units, least important first
    removed: tuple[int, ...]

    @property
    def module(self) -> str:
        return self.block.proj(self.kind)

    def keep(self, removed: int) -> torch.Tensor:
        """The kept input columns at the level removing ``removed`` units."""
        units = kept_units(self.order, removed)
        if self.kind == "o_proj":
            return o_keep(self.block, BlockPlan(kv_groups=units))
        return down_keep(self.block, BlockPlan(channels=units))

    def on_grid(self, units: Sequence[int]) -> int | None:
        """The stored level that keeps exactly ``units`` (as units removed), or None."""
        total = self.block.kv_heads if self.kind == "o_proj" else self.block.channels
        removed = total - len(units)
        return removed if removed in self.removed and tuple(units) == kept_units(self.order, removed) else None


Grams = Callable[[], Mapping[int, BlockStats]]


@dataclass
class StructuredLevels:
    """An opened store: each consumer's refit at each of its levels, memory-mapped."""

    databases: list[LevelDatabase]
    layout: str = DEFAULT_LAYOUT

    def __post_init__(self) -> None:
        self._where = {
            (name, int(level)): (db, i)
            for db in self.databases
            for name in db.layers
            for i, level in enumerate(db.levels)
        }

    def fit(self, name: str, removed: int) -> torch.Tensor | None:
        """The refit of consumer weight ``name`` with ``removed`` units removed, read-only (a view of the
        mapping in the dense layout: never write to it); None where it is not stored."""
        hit = self._where.get((name, removed))
        return None if hit is None else hit[0].weight(name, hit[1])

    @property
    def built_here(self) -> bool:
        """Whether this process fitted any of it (False: every database was on disk or built by another)."""
        return any(db.built_here for db in self.databases)

    def describe(self) -> dict[str, Any] | None:
        """What a job summary reports: the databases, their total build time and size (None: nothing stored)."""
        if not self.databases:
            return None
        return {
            "path": str(levels_dir()),
            "build_seconds": sum(db.build_seconds for db in self.databases),
            "bytes": sum(db.bytes for db in self.databases),
            "layout": self.layout,
            "layers": sum(len(db.layers) for db in self.databases),
            "built_here": self.built_here,
            "databases": [db.describe() for db in self.databases],
        }


def _refits(model: nn.Module, members: list[ConsumerLevels], grams: Grams) -> Iterator[tuple[str, list[torch.Tensor]]]:
    modules = dict(model.named_modules())
    stats = grams()
    for c in members:
        weight = modules[c.module].weight.detach()
        fits = [refit(weight, stats[c.block.index], c.kind, c.keep(r)) for r in c.removed]
        if all(f is not None for f in fits):
            yield c.name, [f for f in fits if f is not None]


def open_store(  # noqa: PLR0913 - what the key is made of, and where the fits come from
    name: str,
    model: nn.Module,
    calibration: Sequence[Batch],
    consumers: Sequence[ConsumerLevels],
    grams: Grams,
    settings: Mapping[str, Any],
    layout: str = DEFAULT_LAYOUT,
) -> StructuredLevels:
    """The consumers' refits at their levels, opened from disk or fitted once for the node (``grams``: the
    dense model's per-block statistics with Gram matrices, asked for only when something is fitted)."""
    if not consumers:
        return StructuredLevels([], layout)
    described = [[c.name, list(c.order), list(c.removed)] for c in consumers]
    extra = {"store": "structured", "store_format": STORE_FORMAT, "damping": DAMP, "consumers": described}
    key = fingerprint(model.state_dict(), calibration, {**settings, **extra})
    groups: dict[tuple[str, tuple[int, ...]], list[ConsumerLevels]] = {}
    for c in consumers:
        groups.setdefault((c.kind, c.removed), []).append(c)
    databases = []
    for i, ((kind, removed), members) in enumerate(groups.items()):

        def build(members: list[ConsumerLevels] = members) -> Iterator[tuple[str, list[torch.Tensor]]]:
            return _refits(model, members, grams)

        levels = [float(r) for r in removed]
        stem = f"{name}-structured-{i}-{kind}"
        databases.append(LevelDatabase.open_or_build(stem, key, levels, build, len(members), layout=layout))
    return StructuredLevels(databases, layout)
