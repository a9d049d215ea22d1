"""The structured latency lookup table's timing, on a tiny grouped-query Llama with the clock replaced: what a
burst of other work, a load that varies from one timed pair to the next, and load on the dense model's
readings alone do to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from structured_tasks import tiny_llama

from prunehive.workers.contracts import LatencyRequest
from prunehive.workers.structure import timing
from prunehive.workers.structure.engine import StructuredEngine
from prunehive.workers.structure.timing import StructuredTimer


@pytest.fixture(scope="module")
def engine() -> StructuredEngine:
    torch.manual_seed(0)
    return StructuredEngine(tiny_llama(), "magnitude", "structured", 2, "sparsegpt")


def test_a_burst_of_other_work_spoils_one_pass_of_the_latency_table_not_the_table(
    engine: StructuredEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock is replaced (a model's time: its parameters); what is under test is how the table keeps the
    fastest of its passes. A burst over one whole pass leaves the table as a quiet machine's."""
    calls: list[int] = []
    burst: set[int] = set()

    def clock(dense: torch.nn.Module, small: torch.nn.Module, *_: object) -> tuple[float, float]:
        calls.append(len(calls))
        slow = 3.0 if calls[-1] in burst else 1.0
        return (slow * sum(p.numel() for p in small.parameters()) / 1e4, slow * engine.total_params / 1e4)

    monkeypatch.setattr(timing, "fastest_ms", clock)
    timer = StructuredTimer(engine, LatencyRequest(batch=1, repeats=3, warmup=0))
    quiet = timer.table()
    per_pass = (len(calls) - timing.PROBES) // timing.PASSES  # the probes that check the table come last
    calls.clear()
    burst.update(range(per_pass, 2 * per_pass))  # the whole second pass
    assert timer.table() == quiet and quiet.dense_ms > 0 and min(min(d) for d in quiet.deltas) < 0
    monkeypatch.setattr(timing, "PASSES", 1)  # one pass, all of it in the burst: the table is off
    calls.clear()
    burst.update(range(per_pass))
    assert timer.table() != quiet


def test_each_latency_table_entry_is_a_ratio_to_the_dense_timing_it_was_paired_with(
    engine: StructuredEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock is replaced (a model's time: its parameters, times a load factor that varies from one timed
    pair to the next, as load on a shared CPU does). Each entry is read against the dense timing it was
    paired with, so the table equals a quiet machine's; read against dense's fastest over all entries, the
    entries timed under more load would shrink (at batch 16, an eighth of the MLP read as no change)."""
    loads = iter(np.random.default_rng(0).uniform(1.0, 1.3, 10_000))
    load = {"on": False}

    def clock(dense: torch.nn.Module, small: torch.nn.Module, *_: object) -> tuple[float, float]:
        factor = next(loads) if load["on"] else 1.0
        return factor * sum(p.numel() for p in small.parameters()), factor * engine.total_params

    monkeypatch.setattr(timing, "fastest_ms", clock)
    timer = StructuredTimer(engine, LatencyRequest(batch=1, repeats=3, warmup=0))
    quiet = timer.table()
    load["on"] = True
    loaded = timer.table()
    assert loaded.dense_ms > quiet.dense_ms  # every dense reading is under some load
    scale = loaded.dense_ms / quiet.dense_ms
    for q, got in zip(quiet.deltas, loaded.deltas, strict=True):
        assert got == pytest.approx([scale * v for v in q], rel=1e-9, abs=1e-9)
    assert min(min(d) for d in quiet.deltas) < 0


def test_a_table_is_scaled_to_what_its_whole_model_probes_measure(
    engine: StructuredEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock is replaced (a model's time: its parameters). While the table is timed, the dense model's
    readings are slowed by half (load that keeps hitting one side of the pairs), so the raw table overstates
    every saving; the probes timed after it read true, and the table scaled to them predicts other models (not
    the probes) much closer to their true fraction of dense."""
    calls: list[int] = []
    slow_dense = {"until": 0}

    def clock(dense: torch.nn.Module, small: torch.nn.Module, *_: object) -> tuple[float, float]:
        calls.append(len(calls))
        factor = 1.5 if calls[-1] < slow_dense["until"] else 1.0
        return sum(p.numel() for p in small.parameters()) / 1e4, factor * engine.total_params / 1e4

    monkeypatch.setattr(timing, "fastest_ms", clock)
    timer = StructuredTimer(engine, LatencyRequest(batch=1, repeats=3, warmup=0))
    quiet = timer.table()
    assert quiet.probe_scale == pytest.approx(1.0) and quiet.probe_error == pytest.approx(0.0, abs=1e-9)
    one_table = len(calls) - timing.PROBES  # the probes come after the table's own timings
    calls.clear()
    slow_dense["until"] = one_table
    scaled = timer.table()
    calls.clear()
    raw = timer.timed_table()  # the same load, not scaled
    assert scaled.probe_scale is not None and scaled.probe_scale < 0.9

    rng = np.random.default_rng(7)  # other models than the probes (seed 0)
    misses: dict[str, list[float]] = {"scaled": [], "raw": []}
    for _ in range(6):
        indices = [int(rng.integers(len(s.grid))) for s in engine.slots]
        small = engine.smaller_model([s.grid[j] for s, j in zip(engine.slots, indices, strict=True)])
        truth = sum(p.numel() for p in small.parameters()) / engine.total_params
        for name, table in (("scaled", scaled), ("raw", raw)):
            misses[name].append(abs(1.0 - timing.saving(table, indices) - truth) / truth)
    assert np.median(misses["scaled"]) < 0.5 * np.median(misses["raw"]), misses
