"""Benchmarks that report ratios measured side by side in one run, never absolute timings to assert on.

``eval`` (``eval_cost.py``): a candidate's evaluation against a bare forward pass; with a level solver
(``level_cost.py``), a level database's size and cost per candidate, compact against dense. ``throughput``
(``throughput.py``): real search jobs at 1 and 2 workers against a bare loop. ``quality`` (``quality.py``):
the benchmark job kind on the built-in tasks. ``speedup`` (``speedup.py``): measured latency of channel-pruned
models next to their FLOPs. ``memory`` (``memory.py``): what an evaluation worker holds beyond its model.
Each suite's module is imported when it runs, so the CLI
checks a suite's name without loading torch.
"""

from __future__ import annotations

from typing import Any

SUITES = ("eval", "throughput", "quality", "speedup", "memory")


def run_suite(
    suite: str,
    tasks: list[str] | None = None,
    repeats: int = 15,
    warmup: int = 3,
    threads: int | None = 1,
    budget: int | None = None,
    min_seconds: float = 1.0,
    seeds: int | None = None,
    strategies: list[str] | None = None,
    solver: str | None = None,
) -> dict[str, Any]:
    """Run one suite; its result is what ``prunehive bench --json`` prints. ``solver`` (eval only): evaluate
    through that solver's level database, compact against dense (``level_cost.py``)."""
    if solver is not None and suite != "eval":
        raise ValueError(f"--solver applies to the eval suite only, not {suite!r}")
    if suite == "eval" and solver is not None:
        from prunehive.bench.eval_cost import EVAL_TASKS  # local: keeps torch out of CLI start-up
        from prunehive.bench.level_cost import level_eval_suite  # local: keeps torch out of CLI start-up

        return level_eval_suite(
            tasks or list(EVAL_TASKS), solver, repeats=repeats, warmup=warmup, threads=threads, min_seconds=min_seconds
        )
    if suite == "eval":
        from prunehive.bench.eval_cost import eval_suite  # local: keeps torch out of CLI start-up

        return eval_suite(tasks, repeats=repeats, warmup=warmup, threads=threads, min_seconds=min_seconds)
    if suite == "throughput":
        from prunehive.bench.throughput import throughput_suite  # local: keeps torch out of CLI start-up

        return throughput_suite(tasks, budget=budget)
    if suite == "quality":
        from prunehive.bench.quality import quality_suite  # local: keeps torch out of CLI start-up

        return quality_suite(tasks, budget=budget, seeds=seeds, strategies=strategies)
    if suite == "memory":
        from prunehive.bench.memory import memory_suite  # local: keeps torch out of CLI start-up

        return memory_suite(tasks)
    if suite == "speedup":
        from prunehive.bench.speedup import speedup_suite  # local: keeps torch out of CLI start-up

        return speedup_suite(tasks, repeats=repeats, warmup=warmup, threads=threads)
    raise ValueError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
