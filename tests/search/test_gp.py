"""The GP metric search: determinism, resumable JSON state, no repeated formulas, budget, failures,
and that it climbs towards a target formula on a synthetic (structural similarity) fitness."""

from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from prunehive.search.expr_canonical import canonical
from prunehive.search.expr_syntax import (
    ARITY,
    TERMINALS,
    ExpressionError,
    Node,
    parse,
    terminals,
    to_string,
)
from prunehive.search.gp import DEFAULT_SEEDS, GPMetricStrategy, ranking_key
from prunehive.search.registry import make_strategy
from prunehive.search.strategy import Candidate, Outcome
from prunehive.search.testing import Driver, stored_history, synthetic_space

TARGET = "mul(sqr(W),minmax(G))"  # Pruner-Zero's best formula


def _subtrees(text: str) -> set[str]:
    out, stack = set(), [parse(text)]
    while stack:
        e = stack.pop()
        out.add(to_string(e))
        if isinstance(e, Node):
            stack.extend(e.args)
    return out


def similarity(cand: Candidate) -> Outcome:
    """Jaccard overlap of the formula's subtrees with the target's: 1.0 only for the target."""
    mine, target = _subtrees(cand.expression or ""), _subtrees(canonical(TARGET))
    return Outcome((len(mine & target) / len(mine | target),))


def drive(budget: int, seed: int, workers: int, fail_every: int = 0, **options: object) -> Driver:
    def objective(cand: Candidate) -> Outcome:
        return Outcome.failed() if fail_every and cand.id % fail_every == 1 else similarity(cand)

    strategy = make_strategy("gp-metric", synthetic_space(), budget, seed, **options)
    return Driver(strategy, objective, workers).run()


def _dump(cands: list[Candidate]) -> list[str]:
    return [json.dumps(c.to_dict(), sort_keys=True) for c in cands]


@pytest.mark.parametrize("workers", [1, 4])
def test_deterministic_by_seed(workers: int) -> None:
    first = _dump(drive(60, 0, workers).asked)
    assert first == _dump(drive(60, 0, workers).asked)
    assert first != _dump(drive(60, 1, workers).asked)


def test_seeds_come_first_at_the_fixed_allocation() -> None:
    space = synthetic_space()
    asked = make_strategy("gp-metric", space, 50, 0).ask(5)
    assert [c.expression for c in asked[:3]] == [canonical(s) for s in DEFAULT_SEEDS]
    assert all(c.meta["origin"] == ("seed" if c.id < 3 else "random") for c in asked)
    assert all(np.allclose(c.sparsity, space.uniform()) for c in asked)
    custom = space.repair(np.linspace(0.2, 0.8, space.dim))
    chosen = GPMetricStrategy(space, 10, allocation=list(custom)).ask(2)
    assert all(np.allclose(c.sparsity, custom) for c in chosen)
    with pytest.raises(ValueError, match="allocation"):
        GPMetricStrategy(space, 10, allocation=[0.9] * space.dim)
    with pytest.raises(ExpressionError):
        GPMetricStrategy(space, 10, seed_expressions=["abs(W"])


@pytest.mark.parametrize(("workers", "cut"), [(1, 0), (1, 23), (4, 7), (4, 31)])
def test_json_state_resumes_identically(workers: int, cut: int) -> None:
    space = synthetic_space()
    original = Driver(GPMetricStrategy(space, 70, 5), similarity, workers).run(max_steps=cut)
    state = json.loads(json.dumps(original.strategy.state_dict()))
    restored_strategy = GPMetricStrategy(space, 70, 5)
    restored_strategy.load_state_dict(state, stored_history(original.results))
    restored = Driver(restored_strategy, similarity, workers)
    restored.inflight, restored.steps = list(original.inflight), original.steps
    n_before = len(original.asked)
    original.run()
    restored.run()
    assert _dump(original.asked[n_before:]) == _dump(restored.asked)
    final = [json.dumps(d.strategy.state_dict(), sort_keys=True) for d in (original, restored)]
    assert final[0] == final[1]
    assert restored.strategy.cache == original.strategy.cache  # rebuilt from the history, not stored


def test_tampered_state_is_rejected_before_deap_reads_it() -> None:
    strategy = GPMetricStrategy(synthetic_space(), 30, 0)
    Driver(strategy, similarity, 2).run(max_steps=25)
    state = json.loads(json.dumps(strategy.state_dict()))
    state["extra"]["pool"][0]["expr"] = "__import__('os')"
    with pytest.raises(ExpressionError):
        GPMetricStrategy(synthetic_space(), 30, 0).load_state_dict(state, strategy.history)


def test_every_formula_is_new_valid_canonical_and_uses_a_statistic() -> None:
    driver = drive(150, 3, 4)
    texts = [c.expression or "" for c in driver.asked]
    assert len(set(texts)) == len(texts)
    keys = [ranking_key(parse(t)) for t in texts]
    assert len(set(keys)) == len(keys), "two asked formulas rank the weights alike"
    for text in texts:
        assert canonical(text) == text  # it parses, so it holds only whitelisted names and numbers
        assert terminals(parse(text)), f"{text} reads none of W, X, G"
        names = set(re.findall(r"[A-Za-z_]\w*", text))
        assert names <= set(ARITY) | set(TERMINALS), names
    assert {c.meta["origin"] for c in driver.asked} >= {"seed", "random", "offspring"}


def test_ranking_key_merges_formulas_that_prune_alike() -> None:
    same = ["abs(W)", "sqr(W)", "sqrt(W)", "log(abs(W))", "minmax(mul(3,abs(W)))", "add(zscore(abs(W)),2)"]
    assert len({ranking_key(parse(t)) for t in same}) == 1
    assert ranking_key(parse("W")) != ranking_key(parse("abs(W)"))
    assert ranking_key(parse("mul(sqr(W),minmax(G))")) != ranking_key(parse("mul(abs(W),minmax(G))"))


@pytest.mark.parametrize("workers", [1, 4])
def test_budget_is_exact(workers: int) -> None:
    strategy = drive(40, 2, workers).strategy
    assert strategy.told == 40 and not strategy.pending and strategy.done
    assert strategy.ask(1) == [] and strategy.ask(8) == []
    small = GPMetricStrategy(synthetic_space(), 5, 0)
    assert len(small.ask(100)) == 5 and small.ask(1) == []


def test_failures_get_the_worst_fitness() -> None:
    driver = drive(60, 4, 4, fail_every=3)
    strategy = driver.strategy
    assert isinstance(strategy, GPMetricStrategy) and strategy.done
    failed = {c.id for c, o in driver.results if o.state == "failed"}
    assert failed and not failed & {m["id"] for m in strategy.pool}
    assert sum(v is None for v in strategy.cache.values()) == len(failed)
    all_failed = GPMetricStrategy(synthetic_space(), 25, 4)
    Driver(all_failed, lambda c: Outcome.failed(), 4).run()
    assert all_failed.done and all_failed.best() == [] and not all_failed.pool


def test_climbs_towards_the_target_formula() -> None:
    for seed in (0, 1):
        driver = drive(160, seed, 4)
        by_id = sorted(driver.results, key=lambda co: co[0].id)
        first = max(o.values[0] for _, o in by_id[:20])
        best = max(o.values[0] for _, o in by_id)
        assert best >= first + 0.15, f"seed {seed}: best {best:.3f} vs first generation {first:.3f}"


def test_global_random_stream_is_untouched() -> None:
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    random.seed(7)
    drive(40, 0, 4)
    assert [random.random() for _ in range(3)] == expected
