"""The end of a metric search: the top expressions next to magnitude, wanda and snip.

All are evaluated on the same fixed allocation, on validation and test, by the same workers;
the parent run keeps a leaderboard artifact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prunehive.platform.jobs.search.summary import SPLITS, _entry, _evaluate
from prunehive.platform.tracking.tracker import plots
from prunehive.search.strategy import Candidate, Strategy
from prunehive.workers.metrics import EXPRESSION_PREFIX

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
    run: SearchRun, pool: ActorPool, strategy: Strategy, info: dict[str, Any], parent: str
) -> dict[str, Any]:
    spec, tracker, q = run.spec, run.tracker, info["quality"]
    allocation = run.allocation or []
    top = top_expressions(strategy)
    if not top:
        raise RuntimeError("no expression evaluated successfully; see the failed trials with `prunehive show`")
    names = [f"expr-{c.id}" for c in top] + list(spec.search.baselines)
    metrics: list[str | None] = [f"{EXPRESSION_PREFIX}{c.expression}" for c in top] + list(spec.search.baselines)
    results = _evaluate(pool, [(n, allocation) for n in names], spec.pruning.recovery_steps, metrics)

    board = []
    for cand in top:
        res = results[f"expr-{cand.id}"]
        if "error" not in res:
            board.append({"expression": cand.expression, "candidate_id": cand.id, **_entry(res)})
    if not board:
        raise RuntimeError("re-evaluating the best expressions failed")
    baselines = {b: (_entry(results[b]) if "error" not in results[b] else results[b]) for b in spec.search.baselines}
    for name, entry in baselines.items():
        if "error" in entry:
            continue
        params, child_metrics, tags = run._child(Candidate(-1, allocation, expression=name), results[name], None)
        params["candidate_id"] = name
        tracker.log_child(parent, f"baseline-{name}", params, child_metrics, {**tags, "prunehive.kind": "baseline"})

    best = board[0]
    final = {f"best.{s}.{k}": float(v) for s in SPLITS for k, v in best["metrics"][s].items()}
    for name, entry in baselines.items():
        if "error" not in entry:
            final.update({f"baseline.{name}.{s}.{q}": float(entry["metrics"][s][q]) for s in SPLITS})
    tracker.log_metrics(parent, final)
    tracker.log_dict(parent, {"leaderboard": board, "baselines": baselines}, "leaderboard.json")
    tracker.log_text(parent, leaderboard_markdown(board, baselines, q), "leaderboard.md")
    values = [o.values[0] for _, o in strategy.history if o.state == "complete"]
    higher = q == "accuracy"
    shown = [v if higher else -v for v in values]
    base_val = {
        n: e["metrics"]["validation"]["objective"] * (1 if higher else -1)
        for n, e in baselines.items()
        if "error" not in e
    }
    label = f"validation {q}" if higher else "validation loss (log-perplexity)"
    tracker.log_figure(parent, plots.best_so_far(shown, higher, base_val, label), "plots/best_so_far.png")
    model = pool.call_one("export", allocation, f"{EXPRESSION_PREFIX}{best['expression']}")
    tracker.log_model(parent, model, name="pruned_model")
    return {
        "job_id": run.job_id,
        "status": "succeeded",
        "kind": "metric-search",
        "trials": run.store.count_trials(run.job_id),
        "quality": q,
        "best": best,
        "leaderboard": board,
        "baselines": baselines,
        "mlflow_run_id": parent,
        "tracking_uri": run.tracking_uri,
    }


def leaderboard_markdown(board: list[dict[str, Any]], baselines: dict[str, dict[str, Any]], quality: str) -> str:
    lines = [f"| metric | validation {quality} | test {quality} |", "|---|---:|---:|"]
    for entry in board:
        m = entry["metrics"]
        lines.append(f"| `{entry['expression']}` | {m['validation'][quality]:.4f} | {m['test'][quality]:.4f} |")
    for name, entry in baselines.items():
        if "error" in entry:
            lines.append(f"| {name} | failed | {entry['error']} |")
        else:
            m = entry["metrics"]
            lines.append(f"| {name} | {m['validation'][quality]:.4f} | {m['test'][quality]:.4f} |")
    return "\n".join(lines) + "\n"
