"""The end of a metric search: the top expressions next to magnitude, wanda and snip.

All are evaluated on the same fixed allocation, on validation and test, by the same workers;
the parent run keeps a leaderboard artifact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunehive.platform.jobs.search.dense import DENSE, dense_entry, dense_metrics, dense_named, rule_fields
from prunehive.platform.jobs.search.finish import (
    Named,
    completed,
    entries,
    final_metrics,
    log_baselines,
    log_best_so_far,
    reevaluate,
)
from prunehive.platform.jobs.summary_types import SearchSummary, entries_to_dict
from prunehive.search.strategy import Candidate, Strategy
from prunehive.workers.contracts import Entry, EvalReply, EvalResult, WorkerInfo
from prunehive.workers.metrics import EXPRESSION_PREFIX
from prunehive.workers.quality import Quality

if TYPE_CHECKING:
    from prunehive.platform.jobs.pool import ActorPool
    from prunehive.platform.jobs.search.driver import SearchRun

TOP = 5


def top_expressions(strategy: Strategy, k: int = TOP) -> list[Candidate]:
    """The k best distinct expressions by validation objective."""
    done = sorted(
        ((c, o) for c, o in strategy.history if o.state == "complete" and c.expression),
        key=lambda co: co[1].values[0],
        reverse=True,
    )
    seen: set[str] = set()
    out = []
    for cand, _ in done:
        if cand.expression not in seen:
            seen.add(cand.expression or "")
            out.append(cand)
    return out[:k]


def finish_metric_search(
    run: SearchRun, pool: ActorPool, strategy: Strategy, info: WorkerInfo, parent: str
) -> SearchSummary:
    spec, tracker, q = run.spec, run.tracker, info.scored_by
    allocation = run.allocation or []
    top = top_expressions(strategy)
    if not top:
        raise RuntimeError("no expression evaluated successfully; see the failed trials with `prunehive show`")
    exprs = [Named(f"expr-{c.id}", c, f"{EXPRESSION_PREFIX}{c.expression}") for c in top]
    baselines = [Named(b, Candidate(-1, allocation, expression=b), b) for b in spec.search.baselines]
    replies = reevaluate(pool, [*exprs, *baselines, dense_named(len(allocation))], spec.pruning.recovery_steps)

    board: list[tuple[Candidate, EvalResult]] = []
    for e in exprs:
        result = replies[e.name].result
        if result is not None:
            board.append((e.candidate, result))
    if not board:
        raise RuntimeError("re-evaluating the best expressions failed")
    base_replies = {b.name: replies[b.name] for b in baselines}
    log_baselines(run, parent, baselines, base_replies)
    base_results = completed(base_replies)

    best_cand, best = board[0]
    tracker.log_metrics(parent, final_metrics(best, base_results, q) | dense_metrics(replies[DENSE]))
    board_entries = [Entry.of(r, candidate_id=c.id, expression=c.expression) for c, r in board]
    base_entries = entries(base_replies)
    dense = dense_entry(replies[DENSE])
    board_json = {
        "leaderboard": [e.to_dict() for e in board_entries],
        "baselines": entries_to_dict(base_entries),
        "dense": dense.to_dict(),
    }
    tracker.log_dict(parent, board_json, "leaderboard.json")
    tracker.log_text(parent, leaderboard_markdown(board, {**base_replies, DENSE: replies[DENSE]}, q), "leaderboard.md")
    log_best_so_far(run, parent, strategy, base_results, q)
    expression = f"{EXPRESSION_PREFIX}{best_cand.expression}"
    model = pool.call_one("export", allocation, expression, spec.pruning.recovery_steps)  # as ``export`` writes it
    tracker.log_model(parent, model, name="pruned_model")
    per_row, rule = rule_fields(spec)
    return SearchSummary(
        job_id=run.job_id,
        status="succeeded",
        kind="metric-search",
        trials=run.store.count_trials(run.job_id),
        quality=q,
        best=board_entries[0],
        leaderboard=board_entries,
        baselines=base_entries,
        dense=dense,
        per_row=per_row,
        rule=rule,
        mlflow_run_id=parent,
        tracking_uri=run.tracking_uri,
    )


def leaderboard_markdown(
    board: list[tuple[Candidate, EvalResult]], baselines: dict[str, EvalReply], quality: Quality
) -> str:
    q = quality.name
    lines = [f"| metric | validation {q} | test {q} |", "|---|---:|---:|"]
    for cand, r in board:
        lines.append(f"| `{cand.expression}` | {r.quality('validation'):.4f} | {r.quality('test'):.4f} |")
    for name, reply in baselines.items():
        if reply.result is None:
            lines.append(f"| {name} | failed | {reply.error} |")
        else:
            r = reply.result
            lines.append(f"| {name} | {r.quality('validation'):.4f} | {r.quality('test'):.4f} |")
    return "\n".join(lines) + "\n"
