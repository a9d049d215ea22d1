"""What ``prunehive run``, ``show`` and ``submit --wait`` print at the end of a job, for people.

The job-kind registry (``platform/jobs``) names one renderer per kind; :func:`print_summary` picks it.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from prunehive.platform.cli.app import out
from prunehive.platform.jobs.lm_eval import summary_lines


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_summary(result: dict[str, Any], kind: str | None = None) -> None:
    """The renderer of ``kind`` (default: the summary's own ``kind``; a search summary carries none)."""
    from prunehive.platform.jobs import job_kind

    job_kind(kind or result.get("kind") or "search").print_summary(result)


def _metric_row(entry: dict[str, Any], q: str) -> list[str]:
    m = entry["metrics"]
    return [f"{entry['achieved_sparsity']:.4f}", f"{m['validation'][q]:.4f}", f"{m['test'][q]:.4f}"]


def _rule(result: dict[str, Any]) -> str:
    """Which weights competed (summaries written before ``rule`` was reported have none)."""
    return f", {result['rule']}" if result.get("rule") else ""


def _search_table(result: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    """The found candidates (bold) above the baselines, on validation and test, the dense model first."""
    q = result["quality"]
    title = f"job {result['job_id'][:8]}: {result['trials']} trials{_rule(result)}"
    table = Table("", "sparsity", f"val {q}", f"test {q}", title=title)
    dense = result.get("dense")
    if dense:
        table.add_row("dense", *(_metric_row(dense, q) if "error" not in dense else ["failed", dense["error"], ""]))
    for entry in entries:
        label = entry.get("expression") or f"search (#{entry.get('candidate_id', '')})"
        table.add_row(label, *_metric_row(entry, q), style="bold")
    for name, entry in result["baselines"].items():
        table.add_row(name, *(_metric_row(entry, q) if "error" not in entry else ["failed", entry["error"], ""]))
    out.print(table)
    for line in summary_lines(result.get("lm_eval")):
        out.print(line, highlight=False)
    out.print(f"MLflow run {result['mlflow_run_id']} at {result['tracking_uri']}  (open it with `prunehive ui`)")


def print_search(result: dict[str, Any]) -> None:
    """``kind: search``: the best candidate, or the Pareto front of a two-objective search."""
    _search_table(result, result.get("pareto_front") or [result["best"]])


def print_metric(result: dict[str, Any]) -> None:
    """``kind: metric-search``: the leaderboard of formulas."""
    _search_table(result, result.get("leaderboard") or [result["best"]])


def print_benchmark(result: dict[str, Any]) -> None:
    """``kind: benchmark``: one table per target."""
    print_benchmarks([result])


def print_benchmarks(results: list[dict[str, Any]]) -> None:
    """One table per task and target: strategies (mean over seeds) next to the heuristics."""
    for r in results:
        q = r["quality"]
        pct = q == "accuracy"
        for target in r["targets"]:
            title = f"quality: {r['task']} at {target:.0%}, {r['budget']} evaluations, {len(r['seeds'])} seeds"
            title += _rule(r)
            table = Table("method", "achieved sparsity", f"val {q}", f"test {q} (mean)", "test std", title=title)
            dense = r.get("dense")
            if dense and "error" not in dense:
                scale = 100.0 if pct else 1.0
                val, test = (scale * dense["metrics"][s][q] for s in ("validation", "test"))
                table.add_row("dense", f"{dense['achieved_sparsity']:.4f}", f"{val:.2f}", f"{test:.2f}", "-")
            for row in (x for x in r["table"] if x["target"] == target):
                name = row["name"] if row["kind"] == "strategy" else f"heuristic: {row['name']}"
                scale = 100.0 if pct else 1.0
                std = row["test_std"]
                table.add_row(
                    name,
                    f"{row['achieved_sparsity']:.4f}",
                    fmt(scale * row["validation_mean"], ".2f"),
                    fmt(scale * row["test_mean"], ".2f"),
                    fmt(None if std is None else scale * std, ".2f"),
                )
            out.print(table)
        out.print(f"report {r.get('report')}; MLflow run {r.get('mlflow_run_id')} at {r.get('tracking_uri')}")


def print_federated(result: dict[str, Any]) -> None:
    """``kind: federated``: each tier's final sparsity and accuracy, the dense reference, what was sent."""
    table = Table(
        "model", "sparsity", "test accuracy", title=f"job {result['job_id'][:8]}: {result['plan']}{_rule(result)}"
    )
    final = result["final"]
    for tier in final.get("tiers") or [{"target": final["sparsity"], **final}]:
        label = f"{result['plan']} {tier['target']:.0%}"
        table.add_row(label, f"{tier['sparsity']:.4f}", f"{tier['test_accuracy']:.4f}", style="bold")
    dense = result.get("dense_reference")
    if dense:
        table.add_row("dense FedAvg", "0", f"{dense['final']['test_accuracy']:.4f}")
    out.print(table)
    out.print(
        f"uplink {result['bytes_up'] / 1e6:.2f} MB ({result['uplink_reduction']:.2f}x less than dense "
        f"{result['dense_bytes_up'] / 1e6:.2f} MB), downlink {result['bytes_down'] / 1e6:.2f} MB, "
        f"{result['failures']} failed client replies"
    )
    out.print(f"MLflow run {result['mlflow_run_id']} at {result['tracking_uri']}  (open it with `prunehive ui`)")
