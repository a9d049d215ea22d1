"""RL's exploration at a high target (the digits-mlp 90% stall) and warm starts for RL and NSGA-II.

The stall: at 90% with a 0.99 cap, RL's action moved a layer up to 0.3 from the average the rest
need and AMC's clamp then cut it to the feasible range, so most of the action range gave one and
the same sparsity. Its warm-up episodes all pushed the tiny classifier head to the cap (chance
accuracy, one reward for all), and once the actor saturated, its exploration noise produced the
same episode over and over: 110 identical trials in the reproduced run.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch

from prunehive.search.nsga2 import NSGA2Strategy
from prunehive.search.rl import RLStrategy
from prunehive.search.rl_agent import action_band, feasible_range, to_action, to_sparsity
from prunehive.search.space import Layer, SearchSpace
from prunehive.search.strategy import Outcome, Strategy
from prunehive.search.testing import Driver, check_state_roundtrip, make_objective, synthetic_space


def digits_like_space(target: float = 0.9) -> SearchSpace:
    """digits-mlp's five linear layers (64-256-256-128-64-10), the head the smallest."""
    shapes = [(256, 64), (256, 256), (128, 256), (64, 128), (10, 64)]
    layers = [Layer(f"fc{i + 1}", "linear", s, s[0] * s[1], s[0] * s[1]) for i, s in enumerate(shapes)]
    return SearchSpace(layers, target=target)


def _warm(space: SearchSpace, n: int = 3) -> list[list[float]]:
    lo, hi = space.bounds()
    return [[float(v) for v in space.repair(np.random.default_rng(10 + i).uniform(lo, hi))] for i in range(n)]


# ---- the stall's cause -------------------------------------------------------------------------
def test_every_action_is_a_distinct_sparsity_inside_the_feasible_range() -> None:
    space, rng = digits_like_space(), np.random.default_rng(0)
    w, (lo, hi) = space.weights(), space.bounds()
    for _ in range(200):
        placed = 0.0
        for t in range(space.dim):
            lower, upper = feasible_range(t, placed, w, lo, hi, space.target)
            needed = (space.target - placed) / float(w[t:].sum())
            band = action_band(needed, 0.3, lower, upper)
            a = np.sort(rng.uniform(0, 1, 5))
            xs = [to_sparsity(float(v), band) for v in a]
            assert all(lower - 1e-12 <= x <= upper + 1e-12 for x in xs), "an action left the feasible range"
            if band[2] - band[0] > 1e-9:  # strictly increasing: no part of the action range is clipped
                assert np.all(np.diff(xs) > 0), f"layer {t}: actions {a} gave sparsities {xs}"
                assert np.allclose([to_action(x, band) for x in xs], a, atol=1e-9)
            placed += float(w[t] * xs[0])


def test_a_saturated_actor_still_explores_at_90_percent() -> None:
    """With the actor's output pinned near 1 and a little noise, every episode must differ.

    Before the fix the clamp mapped every action above 0.65 to the 0.99 cap, so these episodes
    were all the same vector and the agent never saw another reward.
    """
    strategy = RLStrategy(digits_like_space(), 20, 0, warmup=0, noise=0.1)
    with torch.no_grad():
        strategy.actor[-2].bias.fill_(10.0)  # the last Linear before the sigmoid: mu ~ 1 everywhere
    episodes = {tuple(np.round(c.sparsity, 9)) for c in strategy.ask(8)}
    assert len(episodes) == 8, f"only {len(episodes)} distinct episodes out of 8"


def test_warmup_does_not_pin_the_head_to_its_cap() -> None:
    """Random warm-up episodes at 90% must reach the small last layers below the cap; before the fix
    every warm-up episode of the stalled seed left the classifier head at 0.99 (chance accuracy)."""
    space = digits_like_space()
    strategy = RLStrategy(space, 40, 1, warmup=40)
    heads = np.array([c.sparsity[-1] for c in strategy.ask(40)])
    assert np.mean(heads < space.target) >= 0.3, f"head sparsities {np.round(heads, 3)}"


# ---- warm starts -------------------------------------------------------------------------------
def _rl_warm(initial: list[list[float]]) -> Any:
    def factory(space: SearchSpace, budget: int, seed: int) -> Strategy:
        return RLStrategy(space, budget, seed, updates_per_tell=2, initial=initial)

    return factory


def _nsga2_warm(initial: list[list[float]]) -> Any:
    def factory(space: SearchSpace, budget: int, seed: int) -> Strategy:
        return NSGA2Strategy(space, budget, seed, population=8, initial=initial)

    return factory


@pytest.mark.parametrize("make", [_rl_warm, _nsga2_warm], ids=["rl", "nsga2"])
def test_warm_start_vectors_are_asked_first_and_unchanged(make: Any) -> None:
    space = synthetic_space()
    warm = _warm(space)
    strategy = make(warm)(space, 30, 0)
    asked = strategy.ask(len(warm))
    assert [c.meta["origin"] for c in asked] == ["warm-start"] * len(warm)
    for vector, cand in zip(warm, asked, strict=True):
        assert np.allclose(vector, cand.sparsity, atol=1e-9)


def test_rl_warm_start_episodes_enter_the_buffer_like_agent_episodes() -> None:
    space = synthetic_space()
    warm = _warm(space)
    strategy = RLStrategy(space, 30, 0, initial=warm, warmup=2)
    objective = make_objective(space, 1)
    for cand in strategy.ask(len(warm)):
        strategy.tell(cand.id, objective(cand))
    assert len(strategy.buffer) == space.dim * len(warm)
    for i, vector in enumerate(warm):
        _, states, actions = strategy._walk(lambda t, s, band, v=vector: v[t], vector)  # its own prior
        episode = strategy.buffer[i * space.dim : (i + 1) * space.dim]
        assert [(s, a) for s, a, _ in episode] == list(zip(states, actions, strict=True))
        assert all(g == 0.0 for _, _, g in episode)  # keeping the prior gains nothing
    # the random warm-up follows, then the agent: learning starts after both
    origins = [c.meta["origin"] for c in strategy.ask(3)]
    assert origins == ["warmup", "warmup", "agent"]


@pytest.mark.parametrize("make", [_rl_warm, _nsga2_warm], ids=["rl", "nsga2"])
def test_warm_started_search_resumes_identically(make: Any) -> None:
    check_state_roundtrip(make(_warm(synthetic_space())), 1 if make is _rl_warm else 2)


def test_nsga2_keeps_the_uniform_points_after_the_warm_start() -> None:
    space = synthetic_space()
    warm = _warm(space, 2)
    strategy = NSGA2Strategy(space, 40, 0, population=8, initial=warm)
    origins = [c.meta["origin"] for c in strategy.ask(8)]
    assert origins == ["warm-start"] * 2 + ["uniform"] * 4 + ["random"] * 2
    targets = [c.meta["target"] for c in strategy.pending.values()][:2]
    assert np.allclose(targets, space.target, atol=1e-9)  # a heuristic keeps its own sparsity as its gene


def test_warm_state_is_plain_json() -> None:
    space = synthetic_space()
    strategy = RLStrategy(space, 30, 0, initial=_warm(space), warmup=2, hidden=8, batch_size=8)
    Driver(strategy, make_objective(space, 1), workers=3).run(max_steps=10)
    state = strategy.state_dict()
    assert json.loads(json.dumps(state)) == state


def test_rl_explores_around_the_best_episode_so_far() -> None:
    """The residual policy: once results are in, an episode carries the best one as its anchor, and an
    action of 0.5 everywhere (actor at its prior, no noise) gives back that anchor exactly."""
    space = digits_like_space()
    warm = _warm(space, 3)
    strategy = RLStrategy(space, 20, 0, initial=warm, warmup=0, noise=0.0)
    for cand, value in zip(strategy.ask(3), (0.2, 0.7, 0.5), strict=True):
        strategy.tell(cand.id, Outcome((value,)))
    with torch.no_grad():
        strategy.actor[-2].weight.zero_()
        strategy.actor[-2].bias.zero_()  # sigmoid(0) = 0.5: keep the prior
    (cand,) = strategy.ask(1)
    assert cand.meta["anchor"] == warm[1] and cand.meta["anchor_value"] == 0.7
    assert np.allclose(cand.sparsity, warm[1], atol=1e-9)
