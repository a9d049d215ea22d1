"""What ``prunehive run``, ``show`` and ``submit --wait`` print at the end of a job, for people.

The job-kind registry (``platform/jobs``) names one renderer per kind; :func:`print_summary` picks it.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from prunehive.platform.cli.app import out
from prunehive.platform.jobs import job_kind
from prunehive.platform.jobs.lm_eval import summary_lines
from prunehive.platform.jobs.report_types import BenchmarkSummary, FederatedSummary
from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.workers.contracts import Entry, Failed


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_summary(result: dict[str, Any], kind: str | None = None) -> None:
    """The renderer of ``kind`` (default: the summary's own ``kind``; a search summary carries none). Summaries
    arrive as the JSON the store and the API hold; each renderer reads its kind's type from it."""
    job_kind(kind or result.get("kind") or "search").print_summary(result)


def _metric_row(entry: Entry | Failed, q: str) -> list[str]:
    if isinstance(entry, Failed):
        return ["failed", str(entry.error), ""]
    val, test = entry.quality("validation"), entry.quality("test")
    return [f"{entry.achieved_sparsity:.4f}", f"{val:.4f}", f"{test:.4f}"]


def _rule(rule: str | None) -> str:
    """Which weights competed (summaries written before ``rule`` was reported have none)."""
    return f", {rule}" if rule else ""


def _search_table(result: SearchSummary) -> None:
    """The found candidates (bold) above the baselines, on validation and test, the dense model first."""
    q = result.quality.name
    title = f"job {result.job_id[:8]}: {result.trials} trials{_rule(result.rule)}"
    table = Table("", "sparsity", f"val {q}", f"test {q}", title=title)
    if result.dense is not None:
        table.add_row("dense", *_metric_row(result.dense, q))
    for entry in result.found:
        label = entry.expression or f"search (#{'' if entry.candidate_id is None else entry.candidate_id})"
        table.add_row(label, *_metric_row(entry, q), style="bold")
    for name, base in result.baselines.items():
        table.add_row(name, *_metric_row(base, q))
    out.print(table)
    for line in summary_lines(result.lm_eval):
        out.print(line, highlight=False)
    out.print(f"MLflow run {result.mlflow_run_id} at {result.tracking_uri}  (open it with `prunehive ui`)")


def print_search(result: dict[str, Any]) -> None:
    """``kind: search``: the best candidate, or the Pareto front of a two-objective search."""
    _search_table(SearchSummary.from_dict(result))


def print_metric(result: dict[str, Any]) -> None:
    """``kind: metric-search``: the leaderboard of formulas."""
    _search_table(SearchSummary.from_dict(result))


def print_benchmark(result: dict[str, Any]) -> None:
    """``kind: benchmark``: one table per target."""
    print_benchmarks([result])


def print_benchmarks(results: list[dict[str, Any]]) -> None:
    """One table per task and target: strategies (mean over seeds) next to the heuristics (``results``: the
    benchmarks' summaries as JSON, from the store or the quality suite)."""
    for r in map(BenchmarkSummary.from_dict, results):
        quality = r.quality
        q = quality.name
        for target in r.targets:
            title = f"quality: {r.task} at {target:.0%}, {r.budget} evaluations, {len(r.seeds)} seeds"
            title += _rule(r.rule)
            table = Table("method", "achieved sparsity", f"val {q}", f"test {q} (mean)", "test std", title=title)
            if isinstance(r.dense, Entry):
                val, test = (quality.scaled(r.dense.quality(s)) for s in ("validation", "test"))
                table.add_row("dense", f"{r.dense.achieved_sparsity:.4f}", f"{val:.2f}", f"{test:.2f}", "-")
            for row in (x for x in r.table if x.target == target):
                name = row.name if row.kind == "strategy" else f"heuristic: {row.name}"
                std = row.test_std
                table.add_row(
                    name,
                    f"{row.achieved_sparsity:.4f}",
                    fmt(quality.scaled(row.validation_mean), ".2f"),
                    fmt(quality.scaled(row.test_mean), ".2f"),
                    fmt(None if std is None else quality.scaled(std), ".2f"),
                )
            out.print(table)
        out.print(f"report {r.report}; MLflow run {r.mlflow_run_id} at {r.tracking_uri}")


def print_federated(result: dict[str, Any]) -> None:
    """``kind: federated``: each tier's final sparsity and accuracy, the dense reference, what was sent."""
    summary = FederatedSummary.from_dict(result)
    title = f"job {summary.job_id[:8]}: {summary.plan}{_rule(summary.rule)}"
    table = Table("model", "sparsity", "test accuracy", title=title)
    final = summary.final
    for target, sparsity, accuracy in [(t.target, t.sparsity, t.test_accuracy) for t in final.tiers] or [
        (final.sparsity, final.sparsity, final.test_accuracy)
    ]:
        table.add_row(f"{summary.plan} {target:.0%}", f"{sparsity:.4f}", f"{accuracy:.4f}", style="bold")
    if summary.dense_reference is not None:
        table.add_row("dense FedAvg", "0", f"{summary.dense_reference.test_accuracy:.4f}")
    out.print(table)
    traffic = summary.traffic
    out.print(
        f"uplink {traffic.bytes_up / 1e6:.2f} MB ({summary.uplink_reduction:.2f}x less than dense "
        f"{traffic.dense_bytes_up / 1e6:.2f} MB), downlink {traffic.bytes_down / 1e6:.2f} MB, "
        f"{traffic.failures} failed client replies"
    )
    out.print(f"MLflow run {summary.mlflow_run_id} at {summary.tracking_uri}  (open it with `prunehive ui`)")
