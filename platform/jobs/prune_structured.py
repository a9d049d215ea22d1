"""``prunehive prune --granularity head|block|structured``: decoder units removed once by importance, the
consumers reconstructed (solver ``sparsegpt``) or not (``mask``), scored like every other prune.

The JSON has the keys of every other granularity, plus ``plan``: the StructurePlan that export and the
physically smaller model read. ``achieved_sparsity`` is the fraction of the prunable parameters removed
(the attention projections for ``head``, the decoder blocks for ``block`` and ``structured``); ``params``
and ``flops`` are those of the smaller model.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prunehive.workers.contracts import EvalResult
from prunehive.workers.granularity import Granularity, pruning_rule
from prunehive.workers.kl import score_splits
from prunehive.workers.structure.distill import heal
from prunehive.workers.structure.pruner import Pruned, StructuredPruner, check_solver, importance_name
from prunehive.workers.structure.select import ALLOCATIONS
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.base import Split, Task


def check_structured_inputs(
    granularity: str, sparsity: float, allocation: str, metric: str, budget: str, recovery_steps: int, solver: str
) -> None:
    """Everything but the task checked before any model loads, each as one line."""
    check_solver(solver)
    importance_name(metric)
    if allocation not in ALLOCATIONS:
        raise ValueError(
            f"allocation {allocation!r} is not one of {', '.join(ALLOCATIONS)} for granularity {granularity}"
        )
    if budget != "params":
        raise ValueError(f"budget {budget!r}: granularity {granularity} counts the prunable parameters; use params")
    if recovery_steps < 0:
        raise ValueError(f"recovery_steps {recovery_steps} is negative")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} is outside [0, 1)")


def prune_structured(
    task: str,
    sparsity: float | None,
    allocation: str = "global",
    metric: str = "magnitude",
    granularity: str = "structured",
    budget: str = "params",
    recovery_steps: int = 0,
    seed: int = 0,
    solver: str = "mask",
) -> dict[str, Any]:
    """Prune ``task``'s decoder once at ``granularity`` to ``sparsity`` and evaluate it next to dense."""
    gran = Granularity.parse(granularity)
    target = 0.5 if sparsity is None else sparsity
    check_structured_inputs(gran.kind, target, allocation, metric, budget, recovery_steps, solver)
    the_task = load_task(task, seed=seed)
    the_task.check_inputs()
    pruner = StructuredPruner(the_task, gran.kind, importance_name(metric))
    splits = ("validation", "test")
    dense = pruner.dense(splits).entry()
    pruned = pruner.prune(target, allocation, solver, splits)
    result, recovery = healed_prune(the_task, pruner, pruned, recovery_steps, splits)
    return {
        "task": task,
        "metric": metric,
        "solver": solver,
        "granularity": gran.label,
        **pruning_rule(granularity, False, metric),
        "allocation": allocation,
        "target_sparsity": target,
        "requested": dict(pruned.result.layers),
        **result.to_dict(),
        "dense_params": pruner.total_params,
        "dense_flops": pruner.total_flops,
        "quality": the_task.quality,
        "dense": dense,
        "skipped_layers": [],
        "plan": pruned.plan.to_dict(),
        **recovery,
    }


def healed_prune(
    task: Task, pruner: StructuredPruner, pruned: Pruned, steps: int, splits: tuple[Split, ...]
) -> tuple[EvalResult, dict[str, Any]]:
    """``--recovery-steps K``: the pruned model distilled from dense for K steps (``pruning.recovery``'s
    default recipe), its scores replacing the one-shot ones, which the ``recovery`` key keeps."""
    if not steps:
        return pruned.result, {}
    calibration = pruner.calibration
    healed = heal(task, pruner.model, pruner.structure, pruned.plan, pruned.weights, calibration, steps)
    result = replace(pruned.result, metrics=score_splits(task, healed.model, splits))
    one_shot = {s: m.to_dict() for s, m in pruned.result.metrics.items()}
    return result, {"recovery": {"steps": steps, "lr": healed.lr, "distill": "kl", "one_shot": one_shot}}
