"""Measured latency of structured candidates: a lookup table built once, and whole-model re-measurement.

The table holds, per sublayer and level, the change in milliseconds from the dense model (NetAdapt's and
HALP's lookup table). Each (sublayer kind, units removed) is timed once on the physically smaller model
(``shrink``) with that change made in every block at once, and the difference from dense is split evenly
over the blocks: the decoder blocks of one model share their shapes, so one block's change is the same
wherever it sits. A candidate's predicted latency is dense plus the sum of its sublayers' changes.

Timings are the fastest of ``repeats`` interleaved passes, not the median: on a shared CPU the minimum
is the estimate that load inflates least, and the table and the whole-model check use the same one. The
table is timed in three passes over all its entries (each a third of the repeats), so that a burst of
other work, which inflates every forward pass while it lasts, spoils one pass and not the table.
Removing units never makes a sublayer slower, so each sublayer's changes are made non-increasing over
its levels (a noisy reading cannot make a wider model look faster than a narrower one).

A finished table is calibrated against ``PROBES`` whole models (random levels per sublayer, seeded) timed as
a search's trials are: its changes are scaled by the median ratio of the probes' measured saving (one minus
the fraction of dense) to the table's predicted one. Summed over a model's sublayers, a table can misstate the
saving of mixed depth and width (at batch 16 on code-lm-deep by up to ~10%, differently from one timing to the
next, and a table timed under other load by more), and a search fills the budget on the table, so its results
measure off the budget; ``scripts/structured_latency_calibration.py`` checks the scale on held-out models.
The scale and the probes' remaining median relative error travel with the table (``probe_scale``,
``probe_error``) into the job's summary.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from prunehive.search.structured_space import MIN_SAVING, LatencyTable, saving
from prunehive.workers.contracts import LatencyRequest
from prunehive.workers.latency import batch_of
from prunehive.workers.structure.engine import StructuredEngine

PASSES = 3  # the lookup table is timed this many times over (``StructuredTimer.table``)
PROBES = 4  # whole models timed to calibrate a finished table
SCALE_RANGE = (0.5, 2.0)  # the calibration's scale is kept within this


def fastest_ms(
    dense: nn.Module, pruned: nn.Module, inputs: torch.Tensor, repeats: int, warmup: int
) -> tuple[float, float]:
    """The fastest milliseconds per forward pass of ``pruned`` and of ``dense``, timed in alternation
    (CPU: structured candidates are timed where the workers run)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"latency needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    times: tuple[list[float], list[float]] = ([], [])
    with torch.inference_mode():
        for n in range(warmup + repeats):
            for model, out in ((dense, times[0]), (pruned, times[1])):
                start = time.perf_counter()
                model(inputs)
                seconds = time.perf_counter() - start
                if n >= warmup:
                    out.append(seconds)
    return 1000.0 * min(times[1]), 1000.0 * min(times[0])


class StructuredTimer:
    """Times one engine's candidates at one batch size against its dense model."""

    def __init__(self, engine: StructuredEngine, request: LatencyRequest) -> None:
        self.engine, self.request = engine, request
        self.inputs = batch_of(engine.task.example_input(), request.batch)

    def whole(self, vector: list[float]) -> tuple[float, float]:
        """Milliseconds of the candidate's physically smaller model and of the dense model, interleaved."""
        e = self.engine
        small = e.smaller_model(vector)
        return fastest_ms(e.model, small, self.inputs, self.request.repeats, self.request.warmup)

    def table(self, budget: float | None = None) -> LatencyTable:
        """The lookup table (``timed_table``) with its changes scaled to what ``PROBES`` whole models measure."""
        table = self.timed_table(budget)
        probes = self.probes()
        ratios = [(1.0 - m) / saving(table, i) for i, m in probes if saving(table, i) > MIN_SAVING]
        scale = float(np.clip(np.median(ratios), *SCALE_RANGE)) if ratios else 1.0
        scaled = replace(table, deltas=[[scale * v for v in d] for d in table.deltas], probe_scale=scale)
        errors = [abs(1.0 - saving(scaled, i) - m) / m for i, m in probes]
        return replace(scaled, probe_error=float(np.median(errors)))

    def probes(self, count: int = PROBES, seed: int = 0) -> list[tuple[list[int], float]]:
        """``count`` whole models with seeded random levels per sublayer (depth and width mixed, as a search's
        candidates are): each one's level indices and its measured fraction of dense."""
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(count):
            indices = [int(rng.integers(len(s.grid))) for s in self.engine.slots]
            ms, dense_ms = self.whole([s.grid[j] for s, j in zip(self.engine.slots, indices, strict=True)])
            out.append((indices, ms / dense_ms))
        return out

    def timed_table(self, budget: float | None = None) -> LatencyTable:
        """Every sublayer's change at every level, each (kind, units removed) timed in ``PASSES`` passes over
        the whole table, keeping its fastest: a burst of other work spoils the entries of one pass, and the
        other passes still give their quiet times. An entry's change is its ratio to dense's fastest over the
        same passes, as a whole-model timing pairs them: dense's fastest over every entry is the least of many
        more readings, and against it the small changes (an eighth of the MLP) read as no change at all (at
        batch 16 on code-lm-deep, 0.92 of dense measured whole, 1.00 in the table). One smaller model at a time."""
        e = self.engine
        entries: list[tuple[list[int], int, list[float]]] = []  # (sublayers changed, level, vector)
        for kind in sorted({s.kind for s in e.slots}):
            members = [i for i, s in enumerate(e.slots) if s.kind == kind]
            for j in range(1, len(e.slots[members[0]].grid)):
                vector = [0.0] * len(e.slots)
                for i in members:
                    vector[i] = e.slots[i].grid[min(j, len(e.slots[i].grid) - 1)]
                entries.append((members, j, vector))
        if not entries:
            return LatencyTable(self.whole([0.0] * len(e.slots))[1], [[0.0] * len(s.grid) for s in e.slots], budget)
        repeats = max(1, -(-self.request.repeats // PASSES))
        fastest = [float("inf")] * len(entries)
        paired = [float("inf")] * len(entries)  # dense's fastest in the same passes as each entry
        for _ in range(PASSES):
            for k, (_, _, vector) in enumerate(entries):
                small = e.smaller_model(vector)
                ms, dense_ms = fastest_ms(e.model, small, self.inputs, repeats, self.request.warmup)
                fastest[k], paired[k] = min(fastest[k], ms), min(paired[k], dense_ms)
        dense = min(paired)
        deltas = [[0.0] * len(s.grid) for s in e.slots]
        for (members, j, _), ms, dense_ms in zip(entries, fastest, paired, strict=True):
            for i in members:
                deltas[i][min(j, len(deltas[i]) - 1)] = dense * (ms / dense_ms - 1.0) / len(members)
        deltas = [np.minimum.accumulate(np.minimum(d, 0.0)).tolist() for d in deltas]
        return LatencyTable(dense, deltas, budget)

    def one_block_ms(self, table: LatencyTable) -> float:
        """The fastest model that keeps one block (every other one removed), timed whole against dense and
        put on the table's scale: the floor under any latency budget. Timed, not predicted, so a noisy table
        cannot move the floor (the blocks share their shapes, so which block stays does not matter)."""
        e = self.engine
        keep = e.structure.blocks[0].index
        vector = [0.0 if s.block.index == keep else s.grid[-1] for s in e.slots]
        ms, dense_ms = self.whole(vector)
        return table.dense_ms * ms / dense_ms


def with_budget(table: LatencyTable, budget: float | None) -> LatencyTable:
    return replace(table, budget=budget)
