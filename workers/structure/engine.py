"""Scoring structured candidates: a per-sublayer level vector becomes a StructurePlan, is applied to the
live model (with the consumers refitted, for solver ``sparsegpt``) and scored like any other candidate.

One coordinate per decoder sublayer (``<block>.self_attn``, ``<block>.mlp``). Its level is the share of
the sublayer's parameters removed: k of its KV groups, or a step of its MLP channels, always the least
important ones first (the calibration importance of ``select.py``), or 1.0 for the whole sublayer. Granularity
``head`` searches attention widths only; ``block`` only removes sublayers and blocks; ``structured`` does all.

Reconstruction (solver ``sparsegpt``) fits each consumer on the dense model's inputs once per (sublayer,
level) for the whole node: the structured level database of ``level_store.py``, memory-mapped by every
worker. A plan off the level grid (units other than the least important removed) is fitted when asked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from prunehive.search.space import Layer
from prunehive.workers.contracts import EvalResult
from prunehive.workers.kl import DenseReference, score_splits
from prunehive.workers.structure.apply import applied, down_keep, o_keep, plan_weights
from prunehive.workers.structure.level_store import ConsumerLevels, StructuredLevels, kept_units, open_store, refit
from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.pruner import StructuredPruner, check_solver, importance_name
from prunehive.workers.structure.shrink import shrink
from prunehive.workers.structure.stats import BlockStats, collect
from prunehive.workers.structure.units import BlockUnits
from prunehive.workers.tasks.base import Split, Task

MLP_STEPS = 8  # an MLP's channels are removed in eighths


@dataclass(frozen=True)
class Slot:
    """One searchable sublayer: its block, kind and, per level, the units removed (-1: the whole sublayer)."""

    block: BlockUnits
    kind: str  # "attention" | "mlp"
    removed: tuple[int, ...]
    grid: tuple[float, ...]
    order: tuple[int, ...]  # unit indices, least important first
    params: int  # what level 1.0 would remove: the sublayer (its KV groups only, for ``head``)

    @property
    def name(self) -> str:
        return str(self.block.attention if self.kind == "attention" else self.block.mlp)


def _counts(units: int, steps: int) -> list[int]:
    """Units removed per partial level: 0 .. units - 1 (one always stays), at most ``steps`` + 1 levels."""
    return sorted({round(k * units / steps) for k in range(steps)} | {0}) if units > steps else list(range(units))


def _slots(pruner: StructuredPruner, granularity: str, mlp_steps: int) -> list[Slot]:
    out = []
    for b in pruner.structure.blocks:
        for kind, present in (("attention", b.attention), ("mlp", b.mlp)):
            if not present or (granularity == "head" and kind == "mlp"):
                continue
            units, unit_params = (b.kv_heads, b.group_params) if kind == "attention" else (b.channels, b.channel_params)
            whole = b.attention_params if kind == "attention" else b.mlp_params
            if granularity == "head":
                whole = units * unit_params
            scores = (pruner.scores.groups if kind == "attention" else pruner.scores.channels).get(b.index)
            order = tuple(int(i) for i in torch.argsort(scores.double(), stable=True)) if scores is not None else ()
            counts = [0] if granularity == "block" else _counts(units, units if kind == "attention" else mlp_steps)
            removed = tuple(counts) + (() if granularity == "head" else (-1,))
            grid = tuple(1.0 if c < 0 else c * unit_params / whole for c in removed)
            out.append(Slot(b, kind, removed, grid, order or tuple(range(units)), whole))
    return out


def _consumers(slots: list[Slot]) -> list[ConsumerLevels]:
    """Each slot's consumer and the units removed at its partial levels (those a refit serves)."""
    out = []
    for s in slots:
        removed = tuple(c for c in s.removed if c > 0)
        if removed:
            kind = "o_proj" if s.kind == "attention" else "down_proj"
            out.append(ConsumerLevels(f"{s.block.proj(kind)}.weight", kind, s.block, s.order, removed))
    return out


class StructuredEngine:
    """A task's model, its units' importance and the searchable sublayers, scoring level vectors."""

    def __init__(
        self,
        task: Task,
        metric: str = "magnitude",
        granularity: str = "structured",
        calibration_batches: int = 8,
        solver: str = "mask",
        mlp_steps: int = MLP_STEPS,
    ) -> None:
        self.pruner = StructuredPruner(task, granularity, importance_name(metric), calibration_batches)
        self.task, self.model, self.structure = task, self.pruner.model, self.pruner.structure
        self.solver = check_solver(solver)
        self.slots = _slots(self.pruner, granularity, mlp_steps)
        self.reference: DenseReference | None = None
        self.device = next(self.model.parameters()).device
        self._grams: dict[int, BlockStats] | None = None
        self._store: StructuredLevels | None = None  # opened on first use (solver sparsegpt)
        self._fits: dict[tuple[str, int], torch.Tensor] = {}  # (consumer weight name, units removed) -> refit
        self._consumers = {c.name: c for c in _consumers(self.slots)}

    @property
    def layers(self) -> list[Layer]:
        """The search space's coordinates; ``shape`` is (units, parameters per unit)."""
        flops = self.pruner.module_flops
        out = []
        for s in self.slots:
            b = s.block
            units, per = (b.kv_heads, b.group_params) if s.kind == "attention" else (b.channels, b.channel_params)
            out.append(Layer(s.name, "linear", (units, per), s.params, int(flops.get(s.name, 0))))
        return out

    @property
    def grids(self) -> list[list[float]]:
        return [list(s.grid) for s in self.slots]

    @property
    def skipped(self) -> list[str]:
        return []

    @property
    def total_params(self) -> int:
        return self.pruner.total_params

    @property
    def total_flops(self) -> int:
        return self.pruner.total_flops

    def plan_of(self, vector: list[float]) -> StructurePlan:
        """Each sublayer's nearest level as kept units, or the sublayer removed."""
        if len(vector) != len(self.slots):
            raise ValueError(f"expected {len(self.slots)} sublayer levels, got {len(vector)}")
        state: dict[int, dict[str, object]] = {b.index: {} for b in self.structure.blocks}
        for s, v in zip(self.slots, vector, strict=True):
            j = min(range(len(s.grid)), key=lambda k: abs(s.grid[k] - float(v)))
            count = s.removed[j]
            if count < 0:
                state[s.block.index][s.kind] = False
            elif count > 0:
                kept = kept_units(s.order, count)
                state[s.block.index]["kv_groups" if s.kind == "attention" else "channels"] = kept
        return StructurePlan(tuple(BlockPlan(**state[b.index]) for b in self.structure.blocks))  # type: ignore[arg-type]

    def weights(self, plan: StructurePlan) -> dict[str, torch.Tensor]:
        """The plan's full-shaped weights; for ``sparsegpt`` each consumer refitted (read from the level
        store at the grid's levels, fitted here for any other choice of units, which no store holds)."""
        if self.solver == "mask":
            return plan_weights(self.model, self.structure, plan)
        consumers: dict[str, torch.Tensor] = {}
        modules = dict(self.model.named_modules())
        for b, p in zip(self.structure.blocks, plan.blocks, strict=True):
            for kind, units, keep in (("o_proj", p.kv_groups, o_keep), ("down_proj", p.channels, down_keep)):
                present = p.attention if kind == "o_proj" else p.mlp
                if p.removed or units is None or not present:
                    continue
                name = f"{b.proj(kind)}.weight"
                slot = self._consumers.get(name)
                removed = slot.on_grid(units) if slot is not None else None
                if removed is None:
                    fit = refit(modules[b.proj(kind)].weight.detach(), self._dense_grams()[b.index], kind, keep(b, p))
                else:
                    fit = self._stored(name, removed)
                if fit is not None:
                    consumers[name] = fit
        return plan_weights(self.model, self.structure, plan, consumers)

    def level_store(self) -> StructuredLevels | None:
        """The consumers' refits at every level, from disk or fitted once for the node (None: solver mask)."""
        if self.solver == "mask":
            return None
        if self._store is None:
            settings = {
                "solver": self.solver,
                "importance": self.pruner.importance,
                "granularity": self.pruner.granularity,
                "seed": self.task.seed,
            }
            calibration, consumers = self.pruner.calibration, list(self._consumers.values())
            self._store = open_store(self.task.name, self.model, calibration, consumers, self._dense_grams, settings)
        return self._store

    def _stored(self, name: str, removed: int) -> torch.Tensor | None:
        """A stored refit on the model's device (kept: on the CPU it is the mapping's view, no copy)."""
        key = (name, removed)
        if key not in self._fits:
            store = self.level_store()
            fit = store.fit(name, removed) if store is not None else None
            if fit is None:
                return None
            self._fits[key] = fit.to(self.device)
        return self._fits[key]

    def smaller_model(self, vector: list[float]) -> nn.Module:
        """The candidate as a physically smaller model (its consumers refitted where the solver refits)."""
        plan = self.plan_of(vector)
        with applied(self.model, self.structure, plan, self.weights(plan)):
            return shrink(self.model, plan)

    def _dense_grams(self) -> dict[int, BlockStats]:
        if self._grams is None:
            self._grams = collect(self.model, self.structure, self.pruner.calibration, grams=True)
        return self._grams

    def evaluate(
        self,
        vector: list[float],
        splits: tuple[Split, ...] = ("validation",),
        recovery_steps: int = 0,
        limit: int | None = None,
    ) -> EvalResult:
        if recovery_steps:
            raise ValueError("structured candidates are not fine-tuned (recovery_steps must be 0)")
        start = time.perf_counter()
        plan = self.plan_of(vector)
        with applied(self.model, self.structure, plan, self.weights(plan)):
            metrics = score_splits(self.task, self.model, splits, limit, self.reference)
        achieved, _, params, flops = self.pruner.measure(plan)
        layers = {s.name: float(v) for s, v in zip(self.slots, vector, strict=True)}
        return EvalResult(metrics, achieved, layers, params, flops, time.perf_counter() - start)
