"""Layer output error of structured removal, with and without reconstruction, on held-out inputs.

For every block's ``o_proj`` (units: KV groups) and ``down_proj`` (units: channels) and every level (a
fraction of the layer's units removed, least important first), the relative output error
||X (W' - W)^T||^2 / ||X W^T||^2 on validation inputs X, which the least-squares fit never saw, for plain
removal (W' = W with the removed columns zeroed) and for reconstruction (the kept columns refitted on the
calibration inputs). Both layers' inputs come from the dense model, so each row measures the layer alone.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import torch

from prunehive.workers.structure.reconstruct import keep_columns, least_squares, output_error, removed_only
from prunehive.workers.structure.select import Scores, activation_scores, taylor_scores
from prunehive.workers.structure.stats import BlockStats, collect, taylor
from prunehive.workers.structure.units import discover
from prunehive.workers.tasks.base import Task

LEVELS = (0.125, 0.25, 0.5, 0.75)


@dataclass(frozen=True)
class ErrorRow:
    """One layer at one level."""

    layer: str
    kind: str  # "head" (o_proj, KV groups) or "channel" (down_proj)
    level: float
    removed: int  # units removed
    units: int
    removal: float  # relative held-out output error, removed columns zeroed
    reconstruction: float  # the same after the least-squares refit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(
    layer: str, kind: str, weight: torch.Tensor, cal: torch.Tensor, held: torch.Tensor, scores: torch.Tensor,
    unit: int, levels: tuple[float, ...],
) -> list[ErrorRow]:  # fmt: skip
    out = []
    order = torch.argsort(scores.double(), stable=True).tolist()
    n = len(order)
    for level in levels:
        k = int(round(level * n))
        if not 0 < k < n:
            continue
        keep = keep_columns(weight.shape[1], order[:k], unit)
        plain = output_error(weight, removed_only(weight, keep), held)
        fitted = output_error(weight, least_squares(weight, cal, keep), held)
        out.append(ErrorRow(layer, kind, level, k, n, plain, fitted))
    return out


def reconstruction_errors(
    task: Task,
    levels: tuple[float, ...] = LEVELS,
    calibration_batches: int = 8,
    heldout_batches: int = 8,
    importance: str = "activation",
) -> list[ErrorRow]:
    """Every consumer layer's held-out output error at every level, removal against reconstruction."""
    model = task.model()
    structure = discover(model, "structured", f"task {task.name!r}")
    calibration = task.calibration_batches(calibration_batches)
    heldout = list(itertools.islice(task.batches("validation"), heldout_batches))
    cal: dict[int, BlockStats] = collect(model, structure, calibration)
    held: dict[int, BlockStats] = collect(model, structure, heldout)
    scores: Scores = (
        taylor_scores(taylor(task, model, structure, calibration))
        if importance == "taylor"
        else activation_scores(structure, cal)
    )
    modules = dict(model.named_modules())
    rows: list[ErrorRow] = []
    for b in structure.blocks:
        c, h = cal[b.index], held[b.index]
        if b.attention and c.o_gram is not None and h.o_gram is not None:
            name = b.proj("o_proj")
            w = modules[name].weight.detach()
            unit = b.group_size * b.head_dim
            rows += _rows(name, "head", w, c.o_gram, h.o_gram, scores.groups[b.index], unit, levels)
        if b.mlp and c.down_gram is not None and h.down_gram is not None:
            name = b.proj("down_proj")
            w = modules[name].weight.detach()
            rows += _rows(name, "channel", w, c.down_gram, h.down_gram, scores.channels[b.index], 1, levels)
    return rows


def summarise(rows: list[ErrorRow]) -> list[dict[str, Any]]:
    """Per kind and level: mean errors, and in how many layers reconstruction is at or below removal."""
    out = []
    for (kind, level), group in itertools.groupby(
        sorted(rows, key=lambda r: (r.kind, r.level)), lambda r: (r.kind, r.level)
    ):
        items = list(group)
        out.append(
            {
                "kind": kind,
                "level": level,
                "layers": len(items),
                "removal": sum(r.removal for r in items) / len(items),
                "reconstruction": sum(r.reconstruction for r in items) / len(items),
                "wins": sum(r.reconstruction <= r.removal for r in items),
            }
        )
    return out
