"""Test quality of the four heuristic allocations, as a Markdown table (the numbers behind docs/heuristics.md).

Wanda appears twice: ranked across the whole layer (prunehive's default, ``per_row: false``) and within each
output row (the paper's rule and locuslab/wanda's, ``per_row: true`` or ``--per-row``).

For each task and rule this builds one PruningEngine (model, calibration statistics, rankings) and then
does what ``prune_once`` does for every sparsity and allocation on it: a params-budget search space with
the default minimum density, the allocation's per-layer vector, and one evaluation (test split only, no
recovery fine-tuning). ``prune_once`` would rebuild the engine for each of the 72 cells.

    .venv/bin/python scripts/heuristics_table.py > docs/heuristics.md
"""

from __future__ import annotations

import argparse
import sys
import time

from prunehive.platform.jobs.prune_once import check_sparsity
from prunehive.search.space import SearchSpace
from prunehive.workers.baselines import baseline_allocation
from prunehive.workers.engine import PruningEngine
from prunehive.workers.quality import Quality
from prunehive.workers.tasks import load_task

SPARSITIES = {"digits-mlp": (0.5, 0.8, 0.9, 0.95), "code-lm": (0.5, 0.7)}
ALLOCATIONS = ("uniform", "global", "erk", "owl")
# (row label, metric, per_row): the rules compared, each its own engine
RULES = (
    ("magnitude", "magnitude", False),
    ("wanda (layer-wide)", "wanda", False),
    ("wanda (per row)", "wanda", True),
)
MIN_DENSITY = 0.01  # prune_once's default


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Cells = dict[tuple[float, str, str], float]  # (sparsity, metric, allocation) -> test quality


def measure(task_name: str, seed: int) -> tuple[Quality, float, Cells]:
    """(the task's quality, dense test quality, {(sparsity, metric, allocation): test quality})."""
    task = load_task(task_name, seed=seed)
    cells: Cells = {}
    dense = float("nan")
    for metric, metric_name, per_row in RULES:
        start = time.perf_counter()
        engine = PruningEngine(task, metric=metric_name, per_row=per_row, seed=seed)
        log(f"{task_name} / {metric}: engine built in {time.perf_counter() - start:.1f} s")
        if metric == RULES[0][0]:
            dense = engine.evaluate([0.0] * len(engine.names), splits=("test",)).metrics["test"].quality
        for sparsity in SPARSITIES[task_name]:
            space = SearchSpace(
                engine.layers, target=check_sparsity(sparsity), budget="params", min_density=MIN_DENSITY
            )
            for allocation in ALLOCATIONS:
                vector = baseline_allocation(engine, space, allocation)
                result = engine.evaluate(vector, splits=("test",))
                if abs(result.achieved_sparsity - sparsity) > 1e-3:
                    raise RuntimeError(f"{task_name} {metric} {allocation}: achieved {result.achieved_sparsity}")
                cells[(sparsity, metric, allocation)] = result.metrics["test"].quality
                log(f"  {sparsity:.2f} {allocation:8s} {task.quality} {cells[(sparsity, metric, allocation)]:.4f}")
    return Quality(task.quality, task.higher_is_better), dense, cells


def table(results: dict[str, tuple[Quality, float, Cells]], seed: int) -> str:
    lines = [
        "# Heuristic allocations: test quality",
        "",
        "Unstructured pruning, one shot (no recovery fine-tuning), parameter budget, every layer keeping at least "
        f"{MIN_DENSITY:.0%} of its weights, seed {seed}. Cells are test accuracy for digits-mlp (higher is better) "
        "and test perplexity for code-lm (lower is better); the best allocation of each row is in bold. "
        "Wanda ranks weights across the whole layer by default (`per_row: false`); the paper's rule ranks them "
        "within each output row (`per_row: true`, `prunehive prune --per-row`). "
        "Regenerate with `.venv/bin/python scripts/heuristics_table.py > docs/heuristics.md`.",
        "",
        "Dense models: " + "; ".join(f"{t} test {q.name} {q.fmt(dense)}" for t, (q, dense, _) in results.items()) + ".",
        "",
        "| task | sparsity | metric | " + " | ".join(ALLOCATIONS) + " |",
        "|---|---:|---|" + "---:|" * len(ALLOCATIONS),
    ]
    for task_name, (quality, _dense, cells) in results.items():
        for sparsity in SPARSITIES[task_name]:
            for metric, _, _ in RULES:
                values = [cells[(sparsity, metric, a)] for a in ALLOCATIONS]
                best = quality.fmt(quality.best(values))
                shown = [f"**{quality.fmt(v)}**" if quality.fmt(v) == best else quality.fmt(v) for v in values]
                lines.append(f"| {task_name} | {sparsity:.2f} | {metric} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", choices=sorted(SPARSITIES), help="Only this task (repeatable).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tasks = args.task or list(SPARSITIES)
    results = {t: measure(t, args.seed) for t in tasks}
    sys.stdout.write(table(results, args.seed))


if __name__ == "__main__":
    main()
