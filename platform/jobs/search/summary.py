"""The end of a search: best candidate(s) and baselines on validation and test, plots, model.

Every search result is shown next to the heuristic allocations at the same sparsity and
budget, evaluated by the same workers on the same splits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunehive.platform.jobs.search.dense import DENSE, dense_entry, dense_metrics, dense_named, rule_fields
from prunehive.platform.jobs.search.finish import (
    Named,
    completed,
    entries,
    evaluation_tokens,
    final_metrics,
    log_baselines,
    log_best_so_far,
    reevaluate,
)
from prunehive.platform.jobs.search.held_baselines import hold_baselines
from prunehive.platform.jobs.search.trials import objective_values
from prunehive.platform.jobs.structured_search import contenders, held_budget, penalty_budget
from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.platform.tracking import plots
from prunehive.search.strategy import Candidate, Strategy
from prunehive.search.structured_space import StructuredSpace
from prunehive.workers.contracts import Entry, EvalResult, WorkerInfo

if TYPE_CHECKING:
    from prunehive.platform.jobs.pool import ActorPool
    from prunehive.platform.jobs.search.driver import SearchRun

MAX_FRONT = 24  # Pareto members re-evaluated on test; a front is rarely larger
Scored = tuple[int, EvalResult]  # a re-evaluated best candidate: its id and result
PARETO_AXES = {"sparsity": "achieved sparsity", "flops": "fraction of FLOPs removed", "latency": "measured speedup"}


def _at_target(front: list[Scored], target: float) -> Scored:
    """The Pareto member to set against the baselines: the best one at the target sparsity or above."""
    reached = [e for e in front if e[1].achieved_sparsity >= target - 5e-3] or front
    return max(reached, key=lambda e: e[1].objective())


def _entry(scored: Scored) -> Entry:
    return Entry.of(scored[1], candidate_id=scored[0])


def finish(run: SearchRun, pool: ActorPool, strategy: Strategy, info: WorkerInfo, parent: str) -> SearchSummary:
    spec, space = run.spec, run.space
    best = strategy.best()[:MAX_FRONT]
    if not best:
        raise RuntimeError("no trial completed; see the failed trials with `prunehive show`")
    best = contenders(spec, strategy, best)
    baselines = [
        Named(name, Candidate(-1, pool.call_one("allocation", name, space.to_dict()))) for name in spec.search.baselines
    ]
    named = [Named(f"best-{c.id}", c) for c in best] + baselines + [dense_named(len(space.names))]
    replies = reevaluate(pool, named, spec.pruning.recovery_steps)
    if isinstance(space, StructuredSpace):  # a heuristic that measures slower than the budget is placed again
        baselines, replies = hold_baselines(spec, pool, space, baselines, replies)
    q = info.scored_by
    front: list[Scored] = []
    for c in best:
        reply = replies[f"best-{c.id}"]
        if reply.result is None:
            raise RuntimeError(f"re-evaluating the best candidate failed: {reply.error}")
        front.append((c.id, reply.result))
    base_replies = {b.name: replies[b.name] for b in baselines}
    log_baselines(run, parent, baselines, base_replies)
    base_results = completed(base_replies)

    single = strategy.n_objectives == 1
    head = held_budget(front, spec.pruning.latency_budget) if single else _at_target(front, space.target)
    final = final_metrics(head[1], base_results, q)
    final["best.achieved_sparsity"] = head[1].achieved_sparsity
    final.update(dense_metrics(replies[DENSE]))
    run.tracker.log_metrics(parent, final)
    _log_artifacts(run, strategy, parent, head[1], front, base_results, info, pool)

    search, spent = spec.search, None
    if search.fidelity is not None or search.fitness != "quality" or spec.pruning.solver != "mask":
        # Jobs with stages, a fitness other than quality or a solver report what they spent; other jobs' JSON
        # keeps its keys.
        # The dense model's score is a reference, not spent on comparing candidates.
        spent = evaluation_tokens(run, {n: r for n, r in replies.items() if n != DENSE})
    per_row, rule = rule_fields(spec)
    return SearchSummary(
        job_id=run.job_id,
        status="succeeded",
        trials=run.store.count_trials(run.job_id),
        quality=q,
        best=_entry(head),
        baselines=entries(base_replies),
        mlflow_run_id=parent,
        tracking_uri=run.tracking_uri,
        dense=dense_entry(replies[DENSE]),
        per_row=per_row,
        rule=rule,
        pareto_front=[_entry(e) for e in front] if strategy.n_objectives > 1 else None,
        evaluation_tokens=spent,
    )


def _log_artifacts(
    run: SearchRun,
    strategy: Strategy,
    parent: str,
    head: EvalResult,
    front: list[Scored],
    baselines: dict[str, EvalResult],
    info: WorkerInfo,
    pool: ActorPool,
) -> None:
    tracker, names, quality = run.tracker, run.space.names, info.scored_by
    config = {k: v for k, v in Entry.of(head).to_dict().items() if k in ("layers", "achieved_sparsity", "metrics")}
    tracker.log_dict(parent, config, "best_config.json")
    log_best_so_far(run, parent, strategy, baselines, quality)
    tracker.log_figure(
        parent,
        plots.layer_sparsity(
            names,
            [head.layers[n] for n in names],
            {b: [r.layers[n] for n in names] for b, r in baselines.items()},
        ),
        "plots/layer_sparsity.png",
    )
    if strategy.n_objectives > 1:
        search = run.spec.search

        def point(r: EvalResult) -> tuple[float, float]:  # (second objective, fitness), as the strategy saw it
            values = objective_values(search.objectives, r, info.dense_flops, penalty_budget(run.spec), search.fitness)
            return values[1], values[0]

        points = [(o.values[1], o.values[0]) for _, o in strategy.history if o.state == "complete"]
        front_pts = [point(r) for _, r in front]
        base_pts = {
            b: point(r) for b, r in baselines.items() if r.speedup is not None or search.objectives[1] != "latency"
        }
        tracker.log_figure(
            parent,
            plots.pareto_front(points, front_pts, PARETO_AXES[search.objectives[1]], "validation objective", base_pts),
            "plots/pareto_front.png",
        )
    # The measured per-layer sparsities select the same masks as the requested ones; the model is what
    # ``prunehive export`` writes for this candidate (fine-tuned alike).
    model = pool.call_one("export", [head.layers[n] for n in names], None, run.spec.pruning.recovery_steps)
    tracker.log_model(parent, model, name="pruned_model")
