"""``prunehive bench``: the eval, throughput and speedup benchmarks (ratios measured side by side in one run),
and the quality benchmark (every strategy on one budget over seeds, next to the heuristics)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import typer
from rich.table import Table

from prunehive.bench.suites import SUITES, run_suite
from prunehive.platform.cli.app import JSON_OPT, app, err, friendly_errors, out, print_json
from prunehive.platform.cli.summaries import fmt, print_benchmarks


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """While a suite runs, anything printed (Ray, MLflow, also below Python) goes to stderr, so that
    ``--json`` leaves exactly one object on stdout."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real file descriptor 1: Python-level redirection only
        saved = None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _print_eval(result: dict[str, Any]) -> None:
    table = Table(
        "task",
        "repeats",
        "evaluate ms",
        "forward ms",
        "ratio",
        "paired",
        "goal",
        title="eval: candidate vs bare forward",
    )
    for r in result["tasks"]:
        ok = "[green]met[/green]" if r["ratio"] <= r["goal"] else "[red]missed[/red]"
        table.add_row(
            r["task"],
            str(r["repeats"]),
            f"{1000 * r['eval_seconds']:.3f}",
            f"{1000 * r['bare_seconds']:.3f}",
            f"{r['ratio']:.3f}",
            f"{r['ratio_paired']:.3f}",
            f"<= {r['goal']} {ok}",
        )
    out.print(table)
    out.print(f"medians of interleaved repeats; torch threads: {result['tasks'][0]['threads']}")


def _print_levels(result: dict[str, Any]) -> None:
    goals = result["goals"]
    sizes = Table(
        "task", "model MB", "level / model dense", "level / model compact", "goal", "build s dense",
        "build s compact", title=f"eval: {result['solver']} level database size, compact vs dense",
    )  # fmt: skip
    costs = Table(
        "task", "repeats", "evaluate ms dense", "evaluate ms compact", "ratio", "paired", "goal",
        "uncached ratio", "decode share", "forward ms", title="eval: cost per candidate, compact vs dense",
    )  # fmt: skip
    for r in result["tasks"]:
        size_ok = r["compact_level_over_model"] <= goals["level_bytes_over_model"]
        cost_ok = r["cost_ratio"] <= goals["level_cost_ratio"]
        sizes.add_row(
            r["task"],
            f"{r['model_bytes'] / 2**20:.1f}",
            f"{r['dense_level_over_model']:.3f}",
            f"{r['compact_level_over_model']:.3f}",
            f"<= {goals['level_bytes_over_model']} " + ("[green]met[/green]" if size_ok else "[red]missed[/red]"),
            f"{r['dense_build_seconds']:.1f}",
            f"{r['compact_build_seconds']:.1f}",
        )
        costs.add_row(
            r["task"],
            str(r["repeats"]),
            f"{1000 * r['eval_seconds_dense_db']:.3f}",
            f"{1000 * r['eval_seconds_compact_db']:.3f}",
            f"{r['cost_ratio']:.3f}",
            f"{r['cost_ratio_paired']:.3f}",
            f"<= {goals['level_cost_ratio']} " + ("[green]met[/green]" if cost_ok else "[red]missed[/red]"),
            f"{r['uncached_cost_ratio']:.3f}",
            f"{100 * r['uncached_read_share']:+.1f}%",
            f"{1000 * r['bare_seconds']:.3f}",
        )
    out.print(sizes)
    out.print(costs)
    out.print(
        "level / model: a level's bytes on average over the levels; uncached: compact with no decoded level kept; "
        "decode share: reading every level uncached minus reading it dense, over a dense-layout evaluation; "
        f"medians of interleaved repeats; torch threads: {result['tasks'][0]['threads']}"
    )


def _print_memory(result: dict[str, Any]) -> None:
    table = Table(
        "task", "metric", "model MB", "worker extra MB", "extra / model", "goal", "bare eval extra MB",
        title="memory: worker vs model",
    )  # fmt: skip
    for r in result["tasks"]:
        ok = "[green]met[/green]" if r["extra_over_model"] <= r["goal"] else "[red]missed[/red]"
        mb = 1024 * 1024
        table.add_row(
            r["task"],
            r["metric"],
            f"{r['model_bytes'] / mb:.1f}",
            f"{r['worker_extra_bytes'] / mb:.1f}",
            f"{r['extra_over_model']:.2f}",
            f"<= {r['goal']} {ok}",
            f"{r['bare_eval_extra_bytes'] / mb:.1f}",
        )
    out.print(table)
    out.print("peak RSS of a built worker with one candidate evaluated, minus the RSS of the model alone;")
    out.print("bare eval: the same for one plain evaluation of the dense model (activations and data)")


def _print_throughput(result: dict[str, Any]) -> None:
    table = Table(
        "task",
        "trials",
        "trials/s 1w",
        "trials/s 2w",
        "speedup 2w",
        "bare trials/s",
        "runner overhead",
        "fixed ms/trial",
        title="throughput: search phase of real jobs vs a bare loop",
    )
    for r in result["tasks"]:
        runs = r["runs"]
        overhead = r.get("runner_overhead")
        table.add_row(
            r["task"],
            str(r["budget"]),
            fmt(runs.get("1", {}).get("trials_per_second"), ".2f"),
            fmt(runs.get("2", {}).get("trials_per_second"), ".2f"),
            fmt(r.get("speedup_2_workers"), ".2f"),
            f"{r['bare_trials_per_second']:.2f}",
            "-" if overhead is None else f"{100 * overhead:+.1f}%",
            fmt(r.get("fixed_cost_ms_per_trial"), ".1f"),
        )
    out.print(table)
    goals = result["goals"]
    headline = Table("measure", "value", "goal", title="headline")
    headline.add_row(
        f"speedup at 2 workers ({result['scaling_task']})",
        fmt(result["speedup_2_workers"], ".2f"),
        f">= {goals['speedup_2_workers']}",
    )
    overhead = result["runner_overhead"]
    headline.add_row(
        f"runner overhead ({result['scaling_task']})",
        "-" if overhead is None else f"{100 * overhead:+.1f}%",
        f"<= {100 * goals['runner_overhead']:.0f}%",
    )
    headline.add_row(
        f"fixed cost per trial ({result['fixed_cost_task']})",
        f"{fmt(result['fixed_cost_ms_per_trial'], '.1f')} ms",
        f"<= {goals['fixed_cost_ms_per_trial']} ms" if "fixed_cost_ms_per_trial" in goals else "",
    )
    phases = result.get("phases") or {}
    headline.add_row(
        f"start-up / finish / other, 1 worker ({result['fixed_cost_task']})",
        " / ".join(f"{fmt(phases.get(k), '.2f')} s" for k in ("startup_seconds", "finish_seconds", "other_seconds")),
        "",
    )
    out.print(headline)
    out.print(f"search phase only (actor start-up and the final summary excluded); {result['cpus']} CPUs")


def _print_speedup(result: dict[str, Any]) -> None:
    table = Table(
        "task", "sparsity", "batch", "dense ms", "pruned ms", "speedup", "FLOPs ratio", "FLOPs speedup",
        title="speedup: channel-pruned models, measured latency vs FLOPs",
    )  # fmt: skip
    for r in result["rows"]:
        if "error" in r:
            error = f"[red]{r['error'][:70]}[/red]"
            table.add_row(r["task"], fmt(r.get("sparsity"), ".1f"), "-", error, "", "", "", "")
            continue
        table.add_row(
            r["task"],
            f"{r['sparsity']:.1f}",
            str(r["batch"]),
            f"{r['dense_ms']:.3f}",
            f"{r['latency_ms']:.3f}",
            f"{r['speedup']:.2f}x",
            f"{r['flops_ratio']:.3f}",
            f"{r['flops_speedup']:.2f}x",
        )
    out.print(table)
    goal = result["goal"]
    out.print(
        f"goal: >= {goal['speedup']}x at sparsity {goal['sparsity']}, batch {goal['batch']}; medians of "
        f"{result['repeats']} interleaved passes; torch threads: {result['threads']}; device: {result['device']}"
    )


@app.command()
@friendly_errors
def bench(
    suite: str = typer.Option(..., "--suite", help="eval, throughput, quality, speedup or memory."),
    task: str = typer.Option(
        None, "--task", help="Run one task (default: digits-mlp and code-lm; memory: code-lm and llama-100m)."
    ),
    repeats: int = typer.Option(15, "--repeats", min=1, help="eval, speedup: timed repeats (medians are reported)."),
    min_seconds: float = typer.Option(
        1.0, "--min-seconds", min=0.0, help="eval: repeat fast tasks until the bare passes take this long."
    ),
    warmup: int = typer.Option(3, "--warmup", min=0, help="eval, speedup: untimed repeats first."),
    threads: int = typer.Option(1, "--threads", min=1, help="eval, speedup: torch threads (1, like a worker)."),
    budget: int = typer.Option(
        None,
        "--budget",
        min=1,
        help="throughput: trials per job (code-lm 24, digits-mlp 120); quality: evaluations per search "
        "(digits-mlp 200, code-lm 80).",
    ),
    seeds: int = typer.Option(None, "--seeds", min=1, help="quality: seeds per strategy (3)."),
    strategies: str = typer.Option(
        None, "--strategies", help="quality: comma-separated strategies (evolution,nsga2,bayesian,rl,random)."
    ),
    solver: str = typer.Option(
        None,
        "--solver",
        help="eval: evaluate through this solver's level database (sparsegpt or mask), compact vs dense layout.",
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Benchmark evaluation cost (eval), search throughput (throughput), strategies' quality (quality) or the
    measured speedup of channel-pruned models (speedup), or what a worker holds beyond its model (memory)."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    if solver is not None:
        from prunehive.workers.solvers.level_engine import SOLVERS  # local: keeps torch out of CLI start-up

        if suite != "eval" or solver not in SOLVERS:
            raise ValueError(f"--solver {solver!r}: the eval suite takes one of {', '.join(SOLVERS)}")
    tasks = [task] if task else None
    with err.status(f"running the {suite} benchmark"), _stdout_to_stderr():
        result = run_suite(
            suite,
            tasks,
            repeats=repeats,
            warmup=warmup,
            threads=threads,
            budget=budget,
            min_seconds=min_seconds,
            seeds=seeds,
            strategies=[s.strip() for s in strategies.split(",")] if strategies else None,
            solver=solver,
        )
    if as_json:
        print_json(result)
    elif solver is not None:
        _print_levels(result)
    elif suite == "eval":
        _print_eval(result)
    elif suite == "quality":
        print_benchmarks(result["tasks"])
    elif suite == "memory":
        _print_memory(result)
    elif suite == "speedup":
        _print_speedup(result)
    else:
        _print_throughput(result)
