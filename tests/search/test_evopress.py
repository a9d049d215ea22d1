"""EvoPress: (1+λ) evolution by level switches with multi-step selection, inside ask/tell."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prunehive.search.evopress import EvoPressStrategy, default_offspring, default_switches
from prunehive.search.halving import check_stages
from prunehive.search.registry import make_strategy
from prunehive.search.space import Layer, SearchSpace
from prunehive.search.strategy import Candidate, Outcome, Strategy
from prunehive.search.structured_space import LatencyTable, StructuredSpace
from prunehive.search.testing import CHECKS, Driver, check_state_size, make_objective, stored_history, synthetic_space

LEVELS = [round(0.05 * i, 2) for i in range(20)]
STAGES = {"fidelity": [1, 2, 4], "survivors": [5, 2, 1]}  # a cut at 23 tells falls inside a stage
FLAT = Path(__file__).parent / "data" / "evopress_checkpoint_flat_stages.json"
VARIANTS: dict[str, tuple[bool, dict[str, Any]]] = {
    "continuous": (False, {}),
    "levels": (True, {}),
    "levels-multi-fidelity": (True, STAGES),
    "reevaluated-parent": (False, {"offspring": 6, "fidelity": [1, 2], "survivors": [2, 1], "reevaluate_parent": True}),
}


def factory(discrete: bool, options: dict[str, Any]) -> Any:
    def build(space: SearchSpace, budget: int, seed: int) -> Strategy:
        return make_strategy("evopress", space.with_levels(LEVELS) if discrete else space, budget, seed, **options)

    return build


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_conformance(variant: str, check: str) -> None:
    CHECKS[check](factory(*VARIANTS[variant]), 1)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_checkpoint_stays_flat(variant: str) -> None:
    check_state_size(factory(*VARIANTS[variant]), 1)


def test_stages_promote_the_best_and_record_their_tokens() -> None:
    space = synthetic_space().with_levels(LEVELS)
    strategy = EvoPressStrategy(space, 3 + 2 * 23, 0, offspring=16, **STAGES)  # two generations after the first
    Driver(strategy, make_objective(space, 1), workers=4).run()
    by_id = {c.id: (c, o) for c, o in strategy.history}
    for gen in (1, 2):
        rows = [(c, o) for c, o in strategy.history if c.meta["generation"] == gen]
        assert [sum(c.meta["fidelity"] == s for c, _ in rows) for s in range(3)] == [16, 5, 2]
        for c, _ in rows:
            assert c.meta["tokens"] == STAGES["fidelity"][c.meta["fidelity"]]
            assert c.meta["levels"] == space.level_indices(c.sparsity)
        for stage, keep in ((1, 5), (2, 2)):
            lower = sorted(
                ((o.values[0], c.id) for c, o in rows if c.meta["fidelity"] == stage - 1), key=lambda v: (-v[0], v[1])
            )
            promoted = [c.meta["promoted_from"] for c, _ in rows if c.meta["fidelity"] == stage]
            assert sorted(promoted) == sorted(i for _, i in lower[:keep])
            for c, _ in rows:
                if c.meta["fidelity"] == stage:
                    assert by_id[c.meta["promoted_from"]][0].sparsity == c.sparsity
    assert strategy.best()[0].meta["fidelity"] == 2


def test_the_parent_only_improves_and_offspring_keep_the_budget_exact() -> None:
    layers = [Layer(f"layers.{b}.{p}", "linear", (64, 64), 4096, 4096) for b in range(4) for p in "qkvo"]
    space = SearchSpace(layers, 0.6, levels=LEVELS)
    strategy = EvoPressStrategy(space, 150, 0)
    parents = []
    objective = make_objective(space, 1)
    driver = Driver(strategy, objective, workers=2)
    while driver.step():
        if strategy.parent is not None:
            parents.append(strategy.parent["f"])
    assert parents == sorted(parents) and parents[-1] > parents[0]
    for cand, _ in strategy.history:  # equal layers: every switch is exact, so every budget is the target
        assert abs(space.achieved(cand.sparsity) - 0.6) <= 1e-12


def test_resume_mid_stage_repeats_no_trial() -> None:
    space = synthetic_space().with_levels(LEVELS)
    objective = make_objective(space, 1)
    original = Driver(EvoPressStrategy(space, 80, 3, **STAGES), objective, workers=3).run(max_steps=30)
    restored = EvoPressStrategy(space, 80, 3, **STAGES)
    restored.load_state_dict(json.loads(json.dumps(original.strategy.state_dict())), stored_history(original.results))
    again = Driver(restored, objective, workers=3)
    again.inflight, again.steps = list(original.inflight), original.steps
    again.run()
    told = [c.id for c, _ in original.results] + [c.id for c, _ in again.results]
    assert len(told) == len(set(told)) == 80


def test_a_checkpoint_with_the_stages_beside_the_parent_resumes_where_it_stopped() -> None:
    """A flat checkpoint (generation, stage, left and promote beside the parent), cut while the parent's
    re-score was still to ask, resumes to the candidates its writer went on to ask: same ids, vectors and
    recorded keys (promoted offspring also carry their parents)."""
    saved = json.loads(FLAT.read_text())
    assert "halving" not in saved["state"]["extra"] and saved["state"]["extra"]["promote"]
    space = synthetic_space().with_levels(LEVELS)
    strategy = EvoPressStrategy(space, saved["budget"], saved["seed"], **saved["options"])
    told = [(Candidate.from_dict(c), Outcome(tuple(values), state)) for c, values, state in saved["told"]]
    strategy.load_state_dict(saved["state"], told)
    driver = Driver(strategy, make_objective(space, 1), saved["workers"])
    driver.inflight, driver.steps = [strategy.pending[i] for i in saved["inflight"]], saved["steps"]
    driver.run()
    expected = [Candidate.from_dict(c) for c in saved["asked_after"]]
    assert [(c.id, c.sparsity) for c in driver.asked] == [(c.id, c.sparsity) for c in expected]
    for got, old in zip(driver.asked, expected, strict=True):
        assert {k: got.meta[k] for k in old.meta} == old.meta
    assert driver.asked[0].meta["origin"] == "parent" and "halving" in strategy.state_dict()["extra"]


def test_defaults_scale_with_the_layers_and_stages_are_checked() -> None:
    assert [default_offspring(n) for n in (2, 8, 20, 224)] == [8, 16, 40, 64]
    assert [default_switches(n) for n in (2, 8, 16, 224)] == [1, 1, 2, 3]
    assert check_stages(None, None) == (None, [1])
    for fidelity, survivors, match in (
        ([2048], None, "together"),
        ([2048, 16384], [8], "same"),
        ([16384, 2048], [8, 1], "increase"),
        ([2048, 16384], [1, 1], "decrease"),
        ([0, 16384], [8, 1], "at least 1"),
    ):
        with pytest.raises(ValueError, match=match):
            check_stages(fidelity, survivors)
    assert np.isfinite(EvoPressStrategy(synthetic_space(), 5, 0).offspring)


def test_a_promoted_candidate_keeps_its_vector_when_the_latency_budget_tightens() -> None:
    """Stage 0's survivors go to stage 1 as scored, though the budget moved in between (as a structured
    search's latency feedback moves it): re-placing them on the new budget would score another model in
    their name."""
    layers = [Layer(f"b{i}.{k}", "linear", (4, 8), 32, 64) for i in range(4) for k in ("attn", "mlp")]
    grids = [[0.0, 0.25, 0.5, 0.75, 1.0] for _ in layers]
    deltas = [[-1.0 * level for level in grid] for grid in grids]
    space = StructuredSpace(layers, target=0.0, grids=grids, latency=LatencyTable(8.0, deltas, 0.75))
    strategy = EvoPressStrategy(space, budget=40, seed=0, offspring=6, fidelity=[1, 2], survivors=[2, 1])
    for _ in range(2):  # the start, then its promotion
        for cand in strategy.ask(8):
            strategy.tell(cand.id, Outcome([0.0]))
    offspring = strategy.ask(8)
    assert len(offspring) == 6 and all(space.feasible(c.sparsity) for c in offspring)
    for rank, cand in enumerate(offspring):
        strategy.tell(cand.id, Outcome([float(rank)]))
    space.latency = replace(space.latency, budget=0.6)  # tighter than every offspring
    promoted = strategy.ask(8)
    sources = {c.id: c.sparsity for c in offspring}
    assert [c.meta["promoted_from"] for c in promoted] == [offspring[5].id, offspring[4].id]
    for cand in promoted:
        assert cand.sparsity == sources[cand.meta["promoted_from"]]


def test_a_parent_over_a_tightened_budget_gives_way_to_its_best_offspring_within_it() -> None:
    """Offspring of a parent over the budget are all cut smaller than it, so the parent would win every
    generation by being bigger: once the budget moves past it, the best offspring within the budget replaces it,
    though it scored worse."""
    layers = [Layer(f"b{i}.{k}", "linear", (4, 8), 32, 64) for i in range(4) for k in ("attn", "mlp")]
    grids = [[0.0, 0.25, 0.5, 0.75, 1.0] for _ in layers]
    deltas = [[-(1.0 + 0.1 * i) * level for level in grid] for i, grid in enumerate(grids)]
    space = StructuredSpace(layers, target=0.0, grids=grids, latency=LatencyTable(8.0, deltas, 0.75))
    strategy = EvoPressStrategy(space, budget=40, seed=0, offspring=6)
    (start,) = strategy.ask(8)
    strategy.tell(start.id, Outcome([10.0]))
    offspring = strategy.ask(8)
    for cand in offspring:
        strategy.tell(cand.id, Outcome([float(cand.id)]))  # every one worse than the parent
    times = {c.id: space.predicted_ms(c.sparsity) for c in offspring}
    parent_ms = space.predicted_ms(start.sparsity)
    assert parent_ms is not None and min(times.values()) < parent_ms  # type: ignore[type-var]
    limit = (parent_ms + min(times.values())) / 2  # type: ignore[operator]
    space.latency = replace(space.latency, budget=limit / 8.0)  # type: ignore[arg-type]
    strategy.ask(8)  # ends the generation
    within = [c.id for c in offspring if times[c.id] <= limit + 1e-9]  # type: ignore[operator]
    assert strategy.parent is not None and strategy.parent["id"] == max(within)
