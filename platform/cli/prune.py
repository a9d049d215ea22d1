"""``prunehive tasks`` and ``prunehive prune``: list the built-in tasks, prune once with a heuristic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from prunehive.platform.cli.app import JSON_OPT, app, err, friendly_errors, out, print_json
from prunehive.workers.contracts import Entry, EvalResult

PLOT_OPT = typer.Option(
    None, "--plot", help="Write the per-layer figure here (a blocks x sublayers heatmap for many blocks)."
)


@app.command()
@friendly_errors
def tasks(as_json: bool = JSON_OPT) -> None:
    """List the built-in tasks."""
    from prunehive.workers.tasks import describe_tasks  # local: keeps torch out of CLI start-up

    rows = describe_tasks()
    if as_json:
        print_json({"tasks": rows})
        return
    table = Table("task", "quality", "description")
    for row in rows:
        table.add_row(row["name"], row["quality"], row["description"])
    out.print(table)
    out.print("A user task is [bold]package.module:factory[/bold] returning a prunehive Task.")


@app.command()
@friendly_errors
def prune(
    task: str = typer.Option(..., "--task", help="Built-in task name or package.module:factory."),
    sparsity: float = typer.Option(None, "--sparsity", help="Target sparsity in [0, 1) (default 0.5, or N:M's)."),
    allocation: str = typer.Option(
        "uniform", "--allocation", help="uniform, global, erk or owl (head/block/structured: uniform or global)."
    ),
    metric: str = typer.Option(
        "magnitude",
        "--metric",
        help="magnitude, wanda, snip, taylor or random (head/block/structured: magnitude, i.e. activation, or "
        "taylor).",
    ),
    granularity: str = typer.Option(
        "unstructured",
        "--granularity",
        help="unstructured, 2:4, 4:8 (any N:M), channel, or a decoder LM's head (KV groups), block or structured "
        "(heads, MLP channels and blocks together).",
    ),
    per_row: bool = typer.Option(
        False,
        "--per-row",
        help="Unstructured: compare weights within each output row (the Wanda paper's rule); the default "
        "compares them across the whole layer.",
    ),
    budget: str = typer.Option("params", "--budget", help="What the sparsity counts: params or flops."),
    recovery_steps: int = typer.Option(0, "--recovery-steps", help="Fine-tune this many steps after pruning."),
    seed: int = typer.Option(0, "--seed"),
    solver: str = typer.Option(
        "mask", "--solver", help="mask (zero by the metric) or sparsegpt (prune and update the rest; magnitude: OBS)."
    ),
    plot: Path | None = PLOT_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Prune a task once with a heuristic allocation and evaluate it on validation and test."""
    from prunehive.platform.jobs.prune_once import prune_once  # local: keeps torch out of CLI start-up

    with err.status(f"loading {task} (the dense model trains on first use, then it is cached)"):
        result = prune_once(
            task,
            sparsity,
            allocation,
            metric,
            granularity,
            per_row,
            budget,
            recovery_steps=recovery_steps,
            seed=seed,
            solver=solver,
            plot=plot,
        )
    if as_json:
        print_json(result)
        return
    q = result["quality"]
    table = Table(
        "layer", "requested", "achieved", title=f"{task}: {allocation} allocation, {metric}, {result['granularity']}"
    )
    for name, achieved in result["layers"].items():
        table.add_row(name, f"{result['requested'][name]:.4f}", f"{achieved:.4f}")
    out.print(table)
    summary = Table("", "value")
    summary.add_row("weights compared", result["rule"])
    summary.add_row("achieved sparsity", f"{result['achieved_sparsity']:.4f} (target {result['target_sparsity']:.4f})")
    pruned, dense = EvalResult.from_dict(result), Entry.from_dict(result["dense"])
    for split in ("validation", "test"):
        summary.add_row(f"{q} ({split})", f"{pruned.quality(split):.4f} (dense {dense.quality(split):.4f})")
    summary.add_row("params", f"{result['params']:,} of {result['dense_params']:,}")
    summary.add_row("FLOPs", f"{result['flops']:,} of {result['dense_flops']:,}")
    summary.add_row("time", f"{result['seconds']:.3f} s")
    if solver != "mask":
        summary.add_row("solver", solver)
    out.print(summary)
    if "plan" in result:
        print_plan(result["plan"])
    if result["skipped_layers"]:
        out.print(f"kept dense (shape does not fit {result['granularity']}): {', '.join(result['skipped_layers'])}")


def print_plan(plan: dict[str, Any]) -> None:
    """What a structured prune kept, block by block: removed blocks and sublayers, kept KV groups and channels."""
    table = Table("block", "attention (KV groups kept)", "MLP (channels kept)", title="structure kept")
    for i, block in enumerate(plan["blocks"]):
        groups, channels = block["kv_groups"], block["channels"]
        attention = "removed" if not block["attention"] else "all" if groups is None else str(len(groups))
        mlp = "removed" if not block["mlp"] else "all" if channels is None else str(len(channels))
        table.add_row(str(i), attention, mlp)
    out.print(table)
