"""The heuristic baselines of a latency-budgeted structured search, held to the budget as measured.

A heuristic is placed where the lookup table says it meets the budget. The table sums per-sublayer deltas,
and a heuristic's mix (ShortGPT removes whole blocks, uniform width thins every layer) can save less when
timed whole than the table predicts: at 1.5x, batch 1, the combined heuristic placed on the table measured
1.31x. Compared so, a heuristic beats the search by being larger, not by allocating better. The search's
own best is held by the end's re-timing (``held_budget``); a baseline whose whole-model timing misses
``hold_budget`` is placed once more on the table's budget tightened by its own measured share of the
predicted saving, and evaluated and timed again. Its second timing is reported whatever it reads.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from prunehive.platform.jobs.cluster import say
from prunehive.platform.jobs.search.finish import Named, reevaluate
from prunehive.platform.jobs.structured_search import hold_budget
from prunehive.platform.spec.job import JobSpec
from prunehive.search.strategy import Candidate
from prunehive.search.structured_space import StructuredSpace, measured_share, table_budget
from prunehive.workers.contracts import EvalReply

if TYPE_CHECKING:
    from prunehive.platform.jobs.pool import ActorPool

SMALLEST_SHARE = 0.5  # of the predicted saving a baseline is assumed to measure, at least: one tightening, bounded


def missed(spec: JobSpec, reply: EvalReply) -> bool:
    """Whether a baseline's whole-model timing reads slower than the search's best is held to."""
    bound, speedup = hold_budget(spec), reply.result.speedup if reply.result is not None else None
    return bound is not None and bool(speedup) and 1.0 / speedup > bound  # type: ignore[operator]


def tightened(space: StructuredSpace, budget: float, vector: list[float], speedup: float) -> StructuredSpace | None:
    """``space`` with the table's budget where a model saving ``vector``'s measured share of its predicted
    saving meets ``budget``; None where the table predicts (almost) no saving for it."""
    table = space.latency
    share = None if table is None else measured_share(table, space.level_indices(vector), speedup)
    if table is None or share is None:
        return None
    share = min(1.0, max(SMALLEST_SHARE, share))
    return replace(space, latency=replace(table, budget=max(0.0, table_budget(budget, share))))


def hold_baselines(
    spec: JobSpec,
    pool: ActorPool,
    space: StructuredSpace,
    baselines: list[Named],
    replies: dict[str, EvalReply],
) -> tuple[list[Named], dict[str, EvalReply]]:
    """``baselines`` and their replies, each baseline that missed the budget placed and evaluated once more."""
    budget = spec.pruning.latency_budget
    if budget is None or space.latency is None:
        return baselines, replies
    again = []
    for b in baselines:
        result = replies[b.name].result
        if result is None or not result.speedup or not missed(spec, replies[b.name]):
            continue
        tight = tightened(space, budget, list(b.candidate.sparsity), result.speedup)
        if tight is None or tight.latency is None:
            continue
        try:
            vector = pool.call_one("allocation", b.name, tight.to_dict())
        except Exception as exc:  # noqa: BLE001 - the first placement stays, and the job says why
            say(f"baseline {b.name}: measured {result.speedup:.2f}x, not placed again ({exc})")
            continue
        say(
            f"baseline {b.name}: measured {result.speedup:.2f}x against a {1.0 / budget:.2f}x budget; "
            f"placed again at {tight.latency.budget:.3f} of dense on the table"
        )
        again.append(Named(b.name, Candidate(-1, vector), b.metric, b.recovery))
    if not again:
        return baselines, replies
    redone = reevaluate(pool, again, spec.pruning.recovery_steps)
    by_name = {n.name: n for n in again}
    return [by_name.get(b.name, b) for b in baselines], {**replies, **redone}
