"""A strategy's checkpoint holds only its own state: flat in size as a job grows, resumable with the
told history handed back (as the runner reads it from its trial rows), and refused without it."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from prunehive.search.registry import STRATEGIES, make_strategy, strategy_class
from prunehive.search.rl import RLStrategy
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, Outcome, Strategy
from prunehive.search.testing import (
    Driver,
    Objective,
    check_state_size,
    make_objective,
    stored_history,
    synthetic_space,
)

FAST: dict[str, dict[str, Any]] = {"rl": {"updates_per_tell": 1}}  # the size does not depend on training


def formula_hash(cand: Candidate) -> Outcome:
    """A fake objective for metric search: a fixed pseudo-random value per formula (no size pressure)."""
    return Outcome((zlib.crc32((cand.expression or "").encode()) / 2**32,))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_checkpoint_bytes_stay_flat_as_the_job_grows(name: str) -> None:
    def factory(space: SearchSpace, budget: int, seed: int) -> Strategy:
        return make_strategy(name, space, budget, seed, **FAST.get(name, {}))

    objective: Objective | None = formula_hash if name == "gp-metric" else None
    check_state_size(factory, strategy_class(name).n_objectives, objective)


def test_the_state_names_no_trial_beyond_those_pending() -> None:
    space = synthetic_space()
    strategy = make_strategy("random", space, 40, 0)
    driver = Driver(strategy, make_objective(space, 1), workers=3).run(max_steps=20)
    state = strategy.state_dict()
    assert "history" not in state and state["told"] == 20
    assert [c["id"] for c in state["pending"]] == sorted(c.id for c in driver.inflight) != []


def test_resume_needs_the_whole_history() -> None:
    space = synthetic_space()
    driver = Driver(make_strategy("evolution", space, 30, 0), make_objective(space, 1), workers=2).run(max_steps=12)
    state = json.loads(json.dumps(driver.strategy.state_dict()))
    with pytest.raises(ValueError, match="12 tells, but the history holds 11"):
        make_strategy("evolution", space, 30, 0).load_state_dict(state, stored_history(driver.results[:11]))


def test_rl_rebuilds_its_replay_buffer_from_the_history() -> None:
    space = synthetic_space()
    fail_some = make_objective(space, 1, fail=lambda i: i % 5 == 2)
    original = Driver(RLStrategy(space, 60, 0, updates_per_tell=1, buffer_size=100), fail_some, workers=3)
    original.run(max_steps=40)
    assert isinstance(original.strategy, RLStrategy) and len(original.strategy.buffer) == 100  # full and trimmed
    restored = RLStrategy(space, 60, 0, updates_per_tell=1, buffer_size=100)
    restored.load_state_dict(json.loads(json.dumps(original.strategy.state_dict())), stored_history(original.results))
    assert restored.buffer == original.strategy.buffer
