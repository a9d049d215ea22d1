"""The heuristic baselines of a latency-budgeted structured search, held to the budget as measured.

A heuristic is placed where the lookup table says it meets the budget. The table sums per-sublayer deltas,
and a heuristic's mix (ShortGPT removes whole blocks, uniform width thins every layer) can save less or more
when timed whole than the table predicts: at 1.5x, batch 1, the combined heuristic placed on the table
measured 1.31x, and at 2x ShortGPT's six blocks measured 2.25x. Compared so, a heuristic beats the search by
being larger, or loses to it by being smaller, not by allocating better. The search's own best is held by the
end's re-timing (``held_budget``). Both aim ``pruning.latency_margin`` faster than the budget (``aim_budget``).
A baseline whose whole-model timing misses the budget, or beats the aim by more than the margin, is placed once
more on the table's budget scaled by its own measured share of the predicted saving, at the aim, and evaluated
and timed again:
- one that measured slow keeps its second placement whatever it reads;
- one that measured fast keeps its second, larger placement only where that holds the budget, and where it does
  not, one placed midway between the two that holds it (the first otherwise).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from prunehive.platform.jobs.cluster import say
from prunehive.platform.jobs.search.finish import Named, reevaluate
from prunehive.platform.jobs.structured_search import aim_budget
from prunehive.platform.spec.job import JobSpec
from prunehive.search.strategy import Candidate
from prunehive.search.structured_space import StructuredSpace, measured_share, table_budget
from prunehive.workers.contracts import EvalReply

if TYPE_CHECKING:
    from prunehive.platform.jobs.pool import ActorPool

SHARES = (0.5, 2.0)  # bounds on the measured share of the predicted saving one placement again assumes


def _speedup(reply: EvalReply) -> float | None:
    """The whole-model speed-up a reply measured; None where it has none."""
    return (reply.result.speedup or None) if reply.result is not None else None


def missed(spec: JobSpec, reply: EvalReply) -> bool:
    """Whether a baseline's whole-model timing reads slower than the budget, as the search's best is held."""
    bound, speedup = spec.pruning.latency_budget, _speedup(reply)
    return bound is not None and speedup is not None and 1.0 / speedup > bound


def overshot(spec: JobSpec, reply: EvalReply) -> bool:
    """Whether a baseline's whole-model timing reads faster than the aim by more than the margin: it removed
    more than the budget asks, and is placed again on a looser table budget."""
    aim, speedup = aim_budget(spec), _speedup(reply)
    margin = 1.0 + spec.pruning.latency_margin
    return aim is not None and speedup is not None and 1.0 / speedup < aim / margin


def rescaled(space: StructuredSpace, budget: float, vector: list[float], speedup: float) -> StructuredSpace | None:
    """``space`` with the table's budget where a model saving ``vector``'s measured share of its predicted
    saving (within ``SHARES``) meets ``budget``; None where the table predicts (almost) no saving for it."""
    table = space.latency
    share = None if table is None else measured_share(table, space.level_indices(vector), speedup)
    if table is None or share is None:
        return None
    share = min(SHARES[1], max(SHARES[0], share))
    return replace(space, latency=replace(table, budget=min(1.0, max(0.0, table_budget(budget, share)))))


def _placed_at(pool: ActorPool, space: StructuredSpace, b: Named, budget: float) -> Named | None:
    """``b``'s heuristic placed on ``space``'s table at ``budget``; None where it fails or lands on ``b`` itself."""
    assert space.latency is not None
    at = replace(space, latency=replace(space.latency, budget=budget))
    try:
        vector = pool.call_one("allocation", b.name, at.to_dict())
    except Exception as exc:  # noqa: BLE001 - the earlier placement stays, and the job says why
        say(f"baseline {b.name}: not placed again at {budget:.3f} of dense on the table ({exc})")
        return None
    if list(vector) == list(b.candidate.sparsity):
        return None
    return Named(b.name, Candidate(-1, vector), b.metric, b.recovery)


def _placed_again(
    spec: JobSpec, pool: ActorPool, space: StructuredSpace, b: Named, reply: EvalReply
) -> tuple[Named, float] | None:
    """``b`` placed on the table's budget its measured timing calls for, with that budget; None where it is not
    placed again."""
    aim, speedup = aim_budget(spec), _speedup(reply)
    if aim is None or speedup is None or not (missed(spec, reply) or overshot(spec, reply)):
        return None
    scaled = rescaled(space, aim, list(b.candidate.sparsity), speedup)
    if scaled is None or scaled.latency is None or scaled.latency.budget is None:
        return None
    again = _placed_at(pool, space, b, scaled.latency.budget)
    if again is None:
        return None
    say(
        f"baseline {b.name}: measured {speedup:.2f}x against a {1.0 / aim:.2f}x aim; "
        f"placed again at {scaled.latency.budget:.3f} of dense on the table"
    )
    return again, scaled.latency.budget


def midway(first: float, second: float) -> float:
    """The table budget between a fast heuristic's first placement and a larger one that missed the budget: its
    steps are coarse (ShortGPT's are whole blocks), so the budget's own placement can lie between the two
    (1.5x, batch 1: seven blocks measured 1.98x, five missed at 1.46x, six measure 1.69x)."""
    return 0.5 * (first + second)


def hold_baselines(
    spec: JobSpec,
    pool: ActorPool,
    space: StructuredSpace,
    baselines: list[Named],
    replies: dict[str, EvalReply],
) -> tuple[list[Named], dict[str, EvalReply]]:
    """``baselines`` and their replies, each baseline timed off the budget placed and evaluated once more; one
    that measured fast and, placed larger, missed the budget is placed once more ``midway``."""
    if spec.pruning.latency_budget is None or space.latency is None or space.latency.budget is None:
        return baselines, replies
    first = {b.name: b for b in baselines}
    again = [p for b in baselines if (p := _placed_again(spec, pool, space, b, replies[b.name])) is not None]
    if not again:
        return baselines, replies
    redone = reevaluate(pool, [n for n, _ in again], spec.pruning.recovery_steps)
    kept: dict[str, Named] = {}
    between: dict[str, Named] = {}
    for n, at in again:
        if overshot(spec, replies[n.name]) and (redone[n.name].result is None or missed(spec, redone[n.name])):
            m = _placed_at(pool, space, first[n.name], midway(space.latency.budget, at))
            if m is not None and list(m.candidate.sparsity) != list(n.candidate.sparsity):
                between[m.name] = m
            else:
                say(f"baseline {n.name}: placed larger it missed the budget; its first placement stays")
            continue
        kept[n.name] = n
    results = {k: redone[k] for k in kept}
    placed_midway = reevaluate(pool, list(between.values()), spec.pruning.recovery_steps) if between else {}
    for name, reply in placed_midway.items():
        if reply.result is None or missed(spec, reply):
            say(f"baseline {name}: placed larger, and midway, it missed the budget; its first placement stays")
            continue
        kept[name], results[name] = between[name], reply
    return [kept.get(b.name, b) for b in baselines], {**replies, **results}
