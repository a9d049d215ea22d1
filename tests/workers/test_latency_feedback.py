"""The structured search's working latency budget follows its trials' measurements (``LatencyFeedback``): where
the table overstates what candidates save, repair holds a tighter table budget, so they measure the real one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from structured_tasks import TinyLlamaTask, tiny_llama

from prunehive.platform.jobs.latency_feedback import MIN_TRIALS, WINDOW, LatencyFeedback, split_saving
from prunehive.platform.jobs.search.finish import Named, reevaluate
from prunehive.platform.jobs.search.held_baselines import hold_baselines, missed, overshot, rescaled
from prunehive.platform.jobs.structured_search import aim_budget
from prunehive.platform.spec.job import JobSpec, parse_spec
from prunehive.search.strategy import Candidate
from prunehive.search.structured_space import LatencyTable, StructuredSpace
from prunehive.workers.contracts import EvalReply, EvalRequest, EvalResult
from prunehive.workers.structure.baselines import structured_baseline
from prunehive.workers.structure.engine import StructuredEngine

BUDGET = 0.6


@pytest.fixture
def space() -> StructuredSpace:
    torch.manual_seed(0)
    return linear_space(StructuredEngine(tiny_llama(), "magnitude", "structured", 2, "sparsegpt"), BUDGET)


def linear_space(engine: StructuredEngine, budget: float) -> StructuredSpace:
    """``engine``'s space under a 10 ms table whose every level saves its share of the parameters."""
    w = StructuredSpace(engine.layers, target=0.0, grids=engine.grids).weights()
    deltas = [[-10.0 * w[i] * level for level in grid] for i, grid in enumerate(engine.grids)]
    return StructuredSpace(engine.layers, target=0.0, grids=engine.grids, latency=LatencyTable(10.0, deltas, budget))


def timed(space: StructuredSpace, x: np.ndarray, share: float, partial: float | None = None) -> EvalResult:
    """A trial whose whole-model timing saves ``share`` of what the job's table predicts for its whole sublayers
    removed and ``partial`` (default: ``share``) of it for its partly thinned ones (the timing is not under test)."""
    table = TABLES[id(space)]
    whole, thinned = split_saving(table, space.level_indices(x))
    measured = 1.0 - share * whole - (share if partial is None else partial) * thinned
    return EvalResult({}, 0.0, {}, 0, 0, 0.0, latency_ms=10.0 * measured, speedup=1.0 / measured)


TABLES: dict[int, LatencyTable] = {}


@pytest.fixture(autouse=True)
def _job_table(space: StructuredSpace) -> None:
    """The job's own table, which ``timed`` predicts from while the feedback moves the working one."""
    assert space.latency is not None
    TABLES[id(space)] = space.latency


def test_trials_that_save_less_than_predicted_tighten_the_budget_repair_holds(space: StructuredSpace) -> None:
    feedback = LatencyFeedback(space, BUDGET)
    rng = np.random.default_rng(0)
    for k in range(MIN_TRIALS + 4):
        x = space.repair(rng.uniform(0, 1, space.dim))
        assert space.latency is not None
        if k >= MIN_TRIALS:  # once enough trials are in, repaired candidates measure within the real budget
            assert 1.0 / timed(space, x, 0.8).speedup <= BUDGET + 1e-9  # type: ignore[operator]
        feedback.observe(list(x), timed(space, x, 0.8))
    assert feedback.scale == pytest.approx(0.8)
    assert space.latency is not None and space.latency.budget == pytest.approx(1.0 - 0.4 / 0.8)
    assert feedback.to_dict() == {
        "scale": pytest.approx(0.8),
        "working_budget": pytest.approx(0.5),
        "trials": 8,
        "whole_scale": pytest.approx(0.8),
        "partial_scale": pytest.approx(0.8),
    }
    feedback.restore()
    assert space.latency == TABLES[id(space)]


def test_untimed_and_near_dense_trials_do_not_move_the_budget(space: StructuredSpace) -> None:
    feedback = LatencyFeedback(space, BUDGET)
    dense = np.zeros(space.dim)
    untimed = EvalResult({}, 0.0, {}, 0, 0, 0.0)
    for _ in range(MIN_TRIALS + 1):
        feedback.observe(list(dense), timed(space, dense, 0.5))
        feedback.observe(list(space.repair(np.ones(space.dim))), untimed)
    assert not feedback.ratios and space.latency == TABLES[id(space)]


def test_whole_removals_that_save_more_and_thinning_that_saves_less_are_scaled_apart(space: StructuredSpace) -> None:
    """Timings that save 1.3 times the table's prediction for whole sublayers and 0.6 times for thinned ones (as
    a search's trials do at batch 1): the fitted scales tell them apart, repaired candidates measure within the
    budget, and a depth-only candidate the table alone over-charges is admitted."""
    feedback = LatencyFeedback(space, BUDGET)
    rng = np.random.default_rng(2)
    grids = space.grids
    for k in range(WINDOW):
        x = space.repair(rng.uniform(0, 1, space.dim))
        if k >= MIN_TRIALS * 4:
            assert 1.0 / timed(space, x, 1.3, 0.6).speedup <= BUDGET * 1.02  # type: ignore[operator]
        feedback.observe(list(x), timed(space, x, 1.3, 0.6))
    whole, partial = feedback.scales
    assert whole == pytest.approx(1.3, abs=0.1) and partial == pytest.approx(0.6, abs=0.1)
    depth = np.array([g[-1] if i < 2 else 0.0 for i, g in enumerate(grids)])  # the first block removed
    on_table = TABLES[id(space)].predict(space.level_indices(depth)) / 10.0
    measured = 1.0 / timed(space, depth, 1.3, 0.6).speedup  # type: ignore[operator]
    assert on_table > BUDGET >= measured and space.feasible(depth)
    feedback.restore()
    assert not space.feasible(depth)


@pytest.mark.parametrize(("name", "share"), [("uniform", 0.8), ("shortgpt", 0.55), ("combined", 0.8)])
def test_a_heuristic_that_saves_less_than_predicted_is_placed_again_within_the_budget(
    space: StructuredSpace, name: str, share: float
) -> None:
    """``share``: of the table's predicted saving the timing measures (ShortGPT overshoots the budget here,
    its blocks are coarse, so it needs a lower one to miss it)."""
    engine = StructuredEngine(tiny_llama(), "magnitude", "structured", 2, "sparsegpt")
    first = structured_baseline(engine, space, name)
    assert 1.0 / timed(space, first, share).speedup > BUDGET  # type: ignore[operator]  # misses, measured
    tight = rescaled(space, BUDGET, list(first), timed(space, first, share).speedup)  # type: ignore[arg-type]
    assert tight is not None and tight.latency is not None and tight.latency.budget < BUDGET
    again = structured_baseline(engine, tight, name)
    assert 1.0 / timed(space, again, share).speedup <= BUDGET + 1e-9  # type: ignore[operator]
    assert space.latency is not None and space.latency.budget == BUDGET  # the search's own space is left alone
    assert rescaled(space, BUDGET, [0.0] * space.dim, 1.0) is None  # nothing predicted saved: nothing to scale


def test_a_heuristic_that_saves_more_than_predicted_is_placed_again_larger_within_the_budget(
    space: StructuredSpace,
) -> None:
    """ShortGPT's two blocks, timed saving 1.2 times the table's prediction, overshoot the budget; placed on the
    looser table budget that timing calls for, it removes one block and still measures within the budget."""
    engine = StructuredEngine(tiny_llama(), "magnitude", "structured", 2, "sparsegpt")
    first = structured_baseline(engine, space, "shortgpt")
    speedup = timed(space, first, 1.2).speedup
    assert speedup is not None and 1.0 / speedup < BUDGET / 1.05  # overshoots, measured
    loose = rescaled(space, BUDGET, list(first), speedup)
    assert loose is not None and loose.latency is not None and loose.latency.budget > BUDGET
    again = structured_baseline(engine, loose, "shortgpt")
    w = space.weights()
    assert float(w @ np.asarray(again)) < float(w @ np.asarray(first))  # removes less than the first placement
    assert 1.0 / timed(space, again, 1.2).speedup <= BUDGET + 1e-9  # type: ignore[operator]
    assert space.latency is not None and space.latency.budget == BUDGET  # the search's own space is left alone


def test_a_baseline_is_placed_again_only_off_the_budget_and_aim() -> None:
    def spec(margin: float | None = None) -> JobSpec:
        pruning: dict[str, Any] = {"sparsity": 0.0, "granularity": "structured", "latency_budget": 0.5}
        if margin is not None:
            pruning["latency_margin"] = margin
        return parse_spec(
            {"kind": "search", "task": "code-lm", "pruning": pruning, "search": {"strategy": "evopress", "budget": 8}}
        )

    def reply(speedup: float | None) -> EvalReply:
        return EvalReply(0, EvalResult({}, 0.0, {}, 0, 0, 0.0, latency_ms=1.0, speedup=speedup))

    held = spec()  # 2x, aimed at 2.1x (the default 5% margin)
    assert aim_budget(held) == pytest.approx(0.5 / 1.05)
    assert not missed(held, reply(2.0)) and not missed(held, reply(2.3))  # the budget itself holds
    assert missed(held, reply(1.98)) and missed(held, reply(1.85))
    assert not missed(held, reply(None)) and not missed(held, EvalReply(0, None, error="x"))
    assert not overshot(held, reply(2.1)) and not overshot(held, reply(2.2))  # within the margin of the aim
    assert overshot(held, reply(2.25)) and not overshot(held, reply(1.85))
    assert not overshot(held, reply(None)) and not overshot(held, EvalReply(0, None, error="x"))
    exact = spec(0.0)  # no margin: aimed at the budget itself
    assert aim_budget(exact) == 0.5 and overshot(exact, reply(2.05)) and not overshot(exact, reply(1.99))
    channel = {"kind": "search", "task": "code-lm", "pruning": {"granularity": "channel", "latency_budget": 0.5}}
    assert aim_budget(parse_spec(channel)) == 0.5  # penalised, not placed: no aim


class BlockTimedPool:
    """An in-process stand-in for the actor pool (not under test): allocations come from a real engine's
    heuristics, and a candidate's timing is ``FRACTION`` of dense by the number of whole blocks it removes."""

    FRACTION = {5: 0.55, 6: 0.45, 7: 0.25}  # ShortGPT's coarse steps: five blocks miss 0.5, seven overshoot it

    def __init__(self, engine: StructuredEngine) -> None:
        self.engine, self.actors, self.queue = engine, [None], []  # type: ignore[var-annotated]
        self.timed: list[int] = []

    def call_one(self, method: str, name: str, space: dict[str, Any]) -> list[float]:
        assert method == "allocation"
        return [float(v) for v in structured_baseline(self.engine, StructuredSpace.from_dict(space), name)]

    def blocks(self, vector: list[float]) -> int:
        kept = {s.block.index for v, s in zip(vector, self.engine.slots, strict=True) if v != s.grid[-1]}
        return len({s.block.index for s in self.engine.slots}) - len(kept)

    def submit(self, actor: int, requests: list[EvalRequest]) -> None:
        for req in requests:
            self.timed.append(self.blocks(req.sparsity))
            fraction = self.FRACTION.get(self.timed[-1], 1.0)
            result = EvalResult({}, 0.0, {}, 0, 0, 0.0, latency_ms=10.0 * fraction, speedup=1.0 / fraction)
            self.queue.append(EvalReply(req.candidate_id, result))

    @property
    def idle(self) -> bool:
        return not self.queue

    def wait(self, timeout: float = 1.0) -> list[EvalReply]:
        out, self.queue = self.queue, []
        return out


def test_a_fast_heuristic_whose_larger_placement_misses_is_placed_midway() -> None:
    """ShortGPT placed on the table removes seven blocks and measures 4x against a 2x budget; placed again on the
    looser table its timing calls for, five blocks miss the budget; midway, six hold it and are kept."""
    torch.manual_seed(0)
    engine = StructuredEngine(TinyLlamaTask(layers=12), "magnitude", "structured", 2, "sparsegpt")
    spec = parse_spec(
        {
            "kind": "search",
            "task": "code-lm",
            "pruning": {"sparsity": 0.0, "granularity": "structured", "latency_budget": 0.5},
            "search": {"strategy": "evopress", "budget": 8},
        }
    )
    aim = aim_budget(spec)
    assert aim is not None
    space = linear_space(engine, aim)
    pool = BlockTimedPool(engine)
    first = Named("shortgpt", Candidate(-1, pool.call_one("allocation", "shortgpt", space.to_dict())))
    replies = reevaluate(pool, [first], 0)  # type: ignore[arg-type]
    held, held_replies = hold_baselines(spec, pool, space, [first], replies)  # type: ignore[arg-type]
    assert pool.timed == [7, 5, 6]  # first, placed again larger, midway
    assert pool.blocks(list(held[0].candidate.sparsity)) == 6 and held_replies["shortgpt"].result is not None
    assert held_replies["shortgpt"].result.speedup == pytest.approx(1 / 0.45)
    assert space.latency is not None and space.latency.budget == aim_budget(spec)  # the search's space is unchanged
