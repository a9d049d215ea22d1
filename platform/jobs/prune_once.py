"""``prunehive prune``: prune a task once with a heuristic allocation and evaluate it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prunehive.platform.jobs.prune_structured import prune_structured
from prunehive.platform.tracking.block_plots import write_layer_plot
from prunehive.search.space import SearchSpace
from prunehive.workers.baselines import baseline_allocation
from prunehive.workers.engine import PruningEngine
from prunehive.workers.granularity import pruning_rule
from prunehive.workers.layers import count_params
from prunehive.workers.masks import Granularity
from prunehive.workers.solvers.level_engine import SOLVERS
from prunehive.workers.solvers.sequential import evaluate_sequential
from prunehive.workers.solvers.sparsegpt import check_solver_metric
from prunehive.workers.tasks import load_task


def check_sparsity(value: float, field: str = "sparsity") -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{field} {value} is outside [0, 1)")
    return value


def prune_once(
    task: str,
    sparsity: float | None,
    allocation: str = "uniform",
    metric: str = "magnitude",
    granularity: str = "unstructured",
    per_row: bool = False,
    budget: str = "params",
    min_density: float = 0.01,
    recovery_steps: int = 0,
    seed: int = 0,
    solver: str = "mask",
    plot: Path | None = None,
) -> dict[str, Any]:
    """Prune ``task`` to ``sparsity`` with ``allocation`` and ``metric``; evaluate on val and test, next to
    the unpruned model (``dense``, the same entry shape as a search's baselines).

    ``solver`` sparsegpt prunes each layer at exactly its allocated sparsity, block by block on the outputs
    of the blocks pruned before it (no level database), and updates the remaining weights. ``head``,
    ``block`` and ``structured`` remove decoder units instead (see ``prune_structured``). ``plot``: write the
    per-layer figure there (bars, or a blocks x sublayers heatmap for many blocks).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r} is not one of {', '.join(SOLVERS)}")
    gran = Granularity.parse(granularity, per_row=per_row)
    if gran.structured:
        out = prune_structured(task, sparsity, allocation, metric, granularity, budget, recovery_steps, seed, solver)
        if plot is not None:
            write_layer_plot(out["layers"], plot)
        return out
    if solver == "sparsegpt":
        if gran.kind == "channel":
            raise ValueError("solver sparsegpt prunes unstructured or N:M, not channel")
        check_solver_metric(metric)
    if sparsity is None:
        sparsity = gran.default_sparsity if gran.default_sparsity is not None else 0.5
    check_sparsity(sparsity)
    the_task = load_task(task, seed=seed)
    the_task.check_inputs()  # a damaged weight, text or image file: one line naming it, before loading
    engine = PruningEngine(the_task, metric=metric, granularity=granularity, per_row=per_row, seed=seed)
    if budget not in ("params", "flops"):
        raise ValueError(f"budget {budget!r} is not one of params, flops")
    space = SearchSpace(engine.layers, target=sparsity, budget=budget, min_density=min_density)  # type: ignore[arg-type]
    # All zeros prunes nothing (no weight is swapped), so this scores the dense model itself; before any solver runs.
    dense = engine.evaluate([0.0] * len(engine.names), splits=("validation", "test")).entry()
    vector = baseline_allocation(engine, space, allocation)
    if solver == "sparsegpt":
        requested = dict(zip(engine.names, (float(v) for v in vector), strict=True))
        result = evaluate_sequential(engine, requested, ("validation", "test"), recovery_steps)
    else:
        result = engine.evaluate(vector, splits=("validation", "test"), recovery_steps=recovery_steps)
    out = {
        "task": task,
        "metric": metric,
        "solver": solver,
        "granularity": gran.label,
        **pruning_rule(granularity, per_row, metric),
        "allocation": allocation,
        "target_sparsity": sparsity,
        "requested": dict(zip(engine.names, (float(v) for v in vector), strict=True)),
        **result.to_dict(),
        "dense_params": engine.total_params,
        "dense_flops": engine.total_flops,
        "quality": the_task.quality,
        "dense": dense,
        "skipped_layers": engine.skipped,
    }
    if gran.kind == "channel":
        # The physically smaller model also loses its consumers' inputs and the removed channels' biases;
        # its FLOPs already count that (see ``PruningEngine._measure``), its parameters are counted here.
        out["params"] = count_params(engine.export(vector))
    if plot is not None:
        write_layer_plot(out["layers"], plot)
    return out
