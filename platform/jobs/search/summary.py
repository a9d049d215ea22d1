"""The end of a search: best candidate(s) and baselines on validation and test, plots, model.

Every search result is shown next to the heuristic allocations at the same sparsity and
budget, evaluated by the same workers on the same splits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunehive.platform.tracking.tracker import plots
from prunehive.search.strategy import Candidate, Strategy

if TYPE_CHECKING:
    from prunehive.platform.jobs.pool import ActorPool
    from prunehive.platform.jobs.search.driver import SearchRun

SPLITS = ("validation", "test")
MAX_FRONT = 24  # Pareto members re-evaluated on test; a front is rarely larger


def _evaluate(
    pool: ActorPool, items: list[tuple[str, list[float]]], recovery_steps: int, metrics: list[str | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Evaluate named vectors (each optionally with its own metric) on validation and test."""
    for i, (_, vector) in enumerate(items):
        metric = metrics[i] if metrics else None
        sent = (i, vector, metric) if metric else (i, vector)
        pool.submit(i % len(pool.actors), [sent], splits=SPLITS, recovery_steps=recovery_steps)
    out: dict[str, dict[str, Any]] = {}
    while not pool.idle:
        for _sent, replies in pool.wait(timeout=1.0):
            for reply in replies:
                name = items[reply["id"]][0]
                out[name] = reply["result"] if "error" not in reply else {"error": reply["error"]}
    return out


def _entry(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "layers": result["layers"],
        "achieved_sparsity": result["achieved_sparsity"],
        "metrics": result["metrics"],
        "params": result["params"],
        "flops": result["flops"],
    }


def _at_target(front: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The Pareto member to set against the baselines: the best one at the target sparsity or above."""
    reached = [e for e in front if e["achieved_sparsity"] >= target - 5e-3] or front
    return max(reached, key=lambda e: e["metrics"]["validation"]["objective"])


def finish(run: SearchRun, pool: ActorPool, strategy: Strategy, info: dict[str, Any], parent: str) -> dict[str, Any]:
    spec, space, tracker = run.spec, run.space, run.tracker
    best = strategy.best()[:MAX_FRONT]
    if not best:
        raise RuntimeError("no trial completed; see the failed trials with `prunehive show`")
    baselines = {name: pool.call_one("allocation", name, space.to_dict()) for name in spec.search.baselines}
    items = [(f"best-{c.id}", c.sparsity) for c in best] + list(baselines.items())
    results = _evaluate(pool, items, spec.pruning.recovery_steps)
    q = info["quality"]

    failed = [f"best-{c.id}" for c in best if "error" in results[f"best-{c.id}"]]
    if failed:
        raise RuntimeError(f"re-evaluating the best candidate failed: {results[failed[0]]['error']}")
    summary_best = [dict(_entry(results[f"best-{c.id}"]), candidate_id=c.id) for c in best]
    # A heuristic that the task cannot evaluate is reported with its error, not dropped.
    summary_base = {name: _entry(r) if "error" not in r else r for name, r in ((n, results[n]) for n in baselines)}
    for name, vector in baselines.items():
        if "error" in results[name]:
            continue
        cand = Candidate(-1, vector)
        params, metrics, tags = run._child(cand, results[name], None)
        params["candidate_id"] = name
        tracker.log_child(parent, f"baseline-{name}", params, metrics, {**tags, "prunehive.kind": "baseline"})

    head = summary_best[0] if strategy.n_objectives == 1 else _at_target(summary_best, space.target)
    final = {f"best.{s}.{k}": float(v) for s in SPLITS for k, v in head["metrics"][s].items()}
    final["best.achieved_sparsity"] = head["achieved_sparsity"]
    for name, entry in summary_base.items():
        if "error" in entry:
            continue
        final.update({f"baseline.{name}.{s}.{q}": float(entry["metrics"][s][q]) for s in SPLITS})
    tracker.log_metrics(parent, final)
    _log_artifacts(run, strategy, parent, head, summary_best, summary_base, q, pool)

    trials = run.store.count_trials(run.job_id)
    out: dict[str, Any] = {
        "job_id": run.job_id,
        "status": "succeeded",
        "trials": trials,
        "quality": q,
        "best": head,
        "baselines": summary_base,
        "mlflow_run_id": parent,
        "tracking_uri": run.tracking_uri,
    }
    if strategy.n_objectives > 1:
        out["pareto_front"] = summary_best
    return out


def _log_artifacts(
    run: SearchRun,
    strategy: Strategy,
    parent: str,
    head: dict[str, Any],
    front: list[dict[str, Any]],
    baselines: dict[str, dict[str, Any]],
    quality: str,
    pool: ActorPool,
) -> None:
    tracker, space = run.tracker, run.space
    baselines = {n: e for n, e in baselines.items() if "error" not in e}
    tracker.log_dict(
        parent,
        {"layers": head["layers"], "achieved_sparsity": head["achieved_sparsity"], "metrics": head["metrics"]},
        "best_config.json",
    )
    values = [o.values[0] for _, o in strategy.history if o.state == "complete"]
    higher = quality == "accuracy"
    shown = [v if higher else -v for v in values]  # plot the task's own quality scale where possible
    base_val = {n: e["metrics"]["validation"]["objective"] * (1 if higher else -1) for n, e in baselines.items()}
    label = f"validation {quality}" if higher else "validation loss (log-perplexity)"
    tracker.log_figure(parent, plots.best_so_far(shown, higher, base_val, label), "plots/best_so_far.png")
    tracker.log_figure(
        parent,
        plots.layer_sparsity(
            space.names,
            [head["layers"][n] for n in space.names],
            {n: [e["layers"][m] for m in space.names] for n, e in baselines.items()},
        ),
        "plots/layer_sparsity.png",
    )
    if strategy.n_objectives > 1:
        points = [(o.values[1], o.values[0]) for _, o in strategy.history if o.state == "complete"]
        front_pts = [(e["achieved_sparsity"], e["metrics"]["validation"]["objective"]) for e in front]
        base_pts = {n: (e["achieved_sparsity"], e["metrics"]["validation"]["objective"]) for n, e in baselines.items()}
        tracker.log_figure(
            parent,
            plots.pareto_front(points, front_pts, "achieved sparsity", "validation objective", base_pts),
            "plots/pareto_front.png",
        )
    best_vector = [head["layers"][n] for n in space.names]
    tracker.log_model(parent, pool.call_one("export", best_vector), name="pruned_model")
