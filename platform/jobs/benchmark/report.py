"""A benchmark's numbers (mean and spread over seeds, next to the heuristics) and its Markdown report.

Researchers choose a strategy from plots, so the report is Markdown with PNG plots beside it:
best-so-far against evaluations, final test quality against sparsity, and each run's allocation.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from prunehive.platform.jobs.benchmark import plots as benchmark_plots
from prunehive.platform.jobs.report_types import BenchmarkSummary, RunRow, TableRow
from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.workers.contracts import Entry, Failed
from prunehive.workers.granularity import pruning_rule
from prunehive.workers.quality import Quality

if TYPE_CHECKING:
    from prunehive.platform.spec.job import JobSpec


@dataclass(frozen=True)
class Cell:
    """One finished (sparsity, strategy, seed) search job; ``curve`` is its validation objective per trial."""

    sparsity: float | None
    strategy: str
    seed: int
    job_id: str
    mlflow_run_id: str
    summary: SearchSummary
    curve: list[float]


def target_label(target: float | None) -> str:
    """How a target reads in names, keys and file names: ``0.70``, or ``flops`` for a FLOPs budget."""
    return "flops" if target is None else f"{target:.2f}"


def _stats(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def _strategy_row(target: float | None, strategy: str, mine: list[Cell]) -> TableRow:
    """A strategy at a target: its best's quality as mean and std over the seeds."""
    test = [c.summary.best.quality("test") for c in mine]
    v_mean, v_std = _stats([c.summary.best.quality("validation") for c in mine])
    t_mean, t_std = _stats(test)
    return TableRow(
        target=target,
        name=strategy,
        kind="strategy",
        seeds=len(mine),
        evaluations=statistics.fmean(c.summary.trials for c in mine),
        achieved_sparsity=statistics.fmean(c.summary.best.achieved_sparsity for c in mine),
        validation_mean=v_mean,
        validation_std=v_std,
        test_mean=t_mean,
        test_std=t_std,
        test_values=test,
    )


def _heuristic_row(target: float | None, name: str, entry: Entry) -> TableRow:
    """A heuristic at a target: deterministic, so one value and no spread."""
    test = entry.quality("test")
    return TableRow(
        target=target,
        name=name,
        kind="heuristic",
        seeds=1,
        evaluations=None,
        achieved_sparsity=entry.achieved_sparsity,
        validation_mean=entry.quality("validation"),
        validation_std=None,
        test_mean=test,
        test_std=None,
        test_values=[test],
    )


def _run_row(c: Cell) -> RunRow:
    best = c.summary.best
    return RunRow(
        target=c.sparsity,
        strategy=c.strategy,
        seed=c.seed,
        job_id=c.job_id,
        mlflow_run_id=c.mlflow_run_id,
        trials=c.summary.trials,
        achieved_sparsity=best.achieved_sparsity,
        validation=best.quality("validation"),
        test=best.quality("test"),
        layers=best.layers,
    )


def aggregate(cells: list[Cell], spec: JobSpec) -> BenchmarkSummary:
    """Per target and strategy: test and validation quality as mean and std over seeds; heuristics beside."""
    quality = cells[0].summary.quality
    targets = list(dict.fromkeys(c.sparsity for c in cells))
    rows: list[TableRow] = []
    baselines: dict[str, dict[str, Entry | Failed]] = {}
    runs: list[RunRow] = []
    for target in targets:
        here = [c for c in cells if c.sparsity == target]
        for strategy in dict.fromkeys(c.strategy for c in here):
            rows.append(_strategy_row(target, strategy, [c for c in here if c.strategy == strategy]))
        base = here[0].summary.baselines
        baselines[target_label(target)] = base
        rows.extend(_heuristic_row(target, name, e) for name, e in base.items() if isinstance(e, Entry))
        runs.extend(_run_row(c) for c in here)
    first = [c for c in cells if c.sparsity == targets[0]]
    top = max(first, key=lambda c: quality.sign * c.summary.best.quality("validation"))
    rule = pruning_rule(spec.pruning.granularity, spec.pruning.per_row, spec.pruning.metric)
    return BenchmarkSummary(
        task=spec.task_ref,
        quality=quality,
        metric=spec.pruning.metric,
        granularity=spec.pruning.granularity,
        per_row=bool(rule["per_row"]),
        rule=str(rule["rule"]),
        budget=spec.search.budget,
        seeds=spec.benchmark.seed_list,
        strategies=list(spec.benchmark.strategies),
        targets=targets,
        trials=sum(c.summary.trials for c in cells),
        table=rows,
        runs=runs,
        # The best single run at the first target and its heuristics, in a search summary's shape.
        best=replace(top.summary.best, strategy=top.strategy, seed=top.seed),
        baselines=baselines[target_label(targets[0])],
        baselines_by_target=baselines,
        # the unpruned model, as every cell's workers scored it (cells run before it was reported have none)
        dense=cells[0].summary.dense,
    )


def _pm(mean: float, std: float | None, quality: Quality) -> str:
    if std is None:
        return quality.fmt(mean)
    return f"{quality.fmt(mean)} ± {quality.spread(std)}"


def markdown_table(result: BenchmarkSummary, target: float | None) -> str:
    """The table for one target: strategies (mean ± std over seeds) and heuristics; best test mean in bold."""
    quality = result.quality
    q = quality.name
    rows = [r for r in result.table if r.target == target]
    best = max(rows, key=lambda r: quality.sign * r.test_mean)
    lines = [
        f"| method | evaluations | achieved sparsity | validation {q} | test {q} |",
        "|---|---:|---:|---:|---:|",
    ]
    dense = result.dense
    if isinstance(dense, Entry):
        val, test = (quality.fmt(dense.quality(s)) for s in ("validation", "test"))
        lines.append(f"| dense | – | {dense.achieved_sparsity:.4f} | {val} | {test} |")
    for r in rows:
        name = r.name if r.kind == "strategy" else f"heuristic: {r.name}"
        evals = "–" if r.evaluations is None else f"{r.evaluations:.0f}"
        test = _pm(r.test_mean, r.test_std, quality)
        test = f"**{test}**" if r is best else test
        val = _pm(r.validation_mean, r.validation_std, quality)
        lines.append(f"| {name} | {evals} | {r.achieved_sparsity:.4f} | {val} | {test} |")
    return "\n".join(lines)


def write_report(directory: Path, result: BenchmarkSummary, cells: list[Cell], spec: JobSpec) -> Path:
    """``report.md`` and ``plots/*.png`` under ``directory``; returns the report's path."""
    quality = result.quality
    q, higher = quality.name, quality.higher_is_better
    log_scale = not higher  # perplexities of bad allocations dwarf the good ones
    plot_dir = directory / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    layer_names = list(cells[0].summary.best.layers)
    sections = []
    for target in result.targets:
        label = target_label(target)
        here = [c for c in cells if c.sparsity == target]
        curves: dict[str, list[list[float]]] = {}
        for c in here:
            curves.setdefault(c.strategy, []).append([quality.of_objective(v) for v in c.curve])
        heuristics = {n: e for n, e in result.baselines_by_target[label].items() if isinstance(e, Entry)}
        base = {n: e.quality("validation") for n, e in heuristics.items()}
        fig = benchmark_plots.best_so_far_spread(curves, higher, base, f"validation {q}", log_scale)
        fig.savefig(plot_dir / f"best_so_far_{label}.png", dpi=120, bbox_inches="tight")
        allocations = {f"{c.strategy} s{c.seed}": [c.summary.best.layers[n] for n in layer_names] for c in here}
        for name, entry in heuristics.items():
            allocations[f"heuristic: {name}"] = [entry.layers[n] for n in layer_names]
        title = f"Per-layer sparsity found at {label} (each strategy's best per seed, and the heuristics)"
        fig = benchmark_plots.allocation_heatmap(layer_names, allocations, title)
        fig.savefig(plot_dir / f"allocation_{label}.png", dpi=120, bbox_inches="tight")
        heading = f"{100 * target:.0f}% sparsity" if target is not None else f"FLOPs budget {spec.pruning.flops_budget}"
        sections.append(
            f"## {heading}\n\n{markdown_table(result, target)}\n\n"
            f"![best so far](plots/best_so_far_{label}.png)\n\n![allocation](plots/allocation_{label}.png)\n"
        )
    strat_pts: dict[str, list[tuple[float, float, float]]] = {}
    heur_pts: dict[str, list[tuple[float, float]]] = {}
    for r in result.table:
        x = r.achieved_sparsity if r.target is None else r.target
        if r.kind == "strategy":
            strat_pts.setdefault(r.name, []).append((x, r.test_mean, r.test_std or 0.0))
        else:
            heur_pts.setdefault(r.name, []).append((x, r.test_mean))
    fig = benchmark_plots.quality_vs_sparsity(strat_pts, heur_pts, q, higher, log_scale)
    fig.savefig(plot_dir / "quality_vs_sparsity.png", dpi=120, bbox_inches="tight")

    seeds = result.seeds
    head = (
        f"# Benchmark: {spec.task}, {spec.pruning.metric} {spec.pruning.granularity} pruning ({result.rule})\n\n"
        f"Strategies {', '.join(result.strategies)}, each with the same budget of {result.budget} "
        f"evaluations and {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), {spec.resources.workers} workers. "
        f"Searches optimise validation; test is reported as mean ± standard deviation over seeds. "
        f"Heuristics are deterministic (one value). Best-so-far curves count only evaluations that reach "
        f"the target sparsity (NSGA-II also explores below it).\n\n"
        f"![test {q} vs sparsity](plots/quality_vs_sparsity.png)\n"
    )
    runs = ["| target | strategy | seed | job | MLflow run | validation | test |", "|---|---|---:|---|---|---:|---:|"]
    for r in result.runs:
        runs.append(
            f"| {target_label(r.target)} | {r.strategy} | {r.seed} | `{r.job_id[:8]}` "
            f"| `{r.mlflow_run_id}` | {quality.fmt(r.validation)} | {quality.fmt(r.test)} |"
        )
    text = "\n".join([head, *sections, "## Runs\n", *runs, ""])
    path = directory / "report.md"
    path.write_text(text)
    return path
