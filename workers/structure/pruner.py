"""Structured pruning of a decoder LM task: importance from calibration statistics, a plan removing the
least important KV groups, MLP channels or blocks, the consumers reconstructed by least squares (solver
``sparsegpt``) or left as they are (``mask``), and the result scored like every other candidate.

Reconstruction runs block by block on the outputs of the blocks pruned before it, as SparseGPT does for
unstructured pruning: each consumer is refitted to the inputs it will actually see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from prunehive.workers.contracts import EvalResult
from prunehive.workers.kl import score_splits
from prunehive.workers.layers import count_flops, count_params
from prunehive.workers.structure.accounting import layer_fractions, plan_flops, prunable_params, removed_params
from prunehive.workers.structure.apply import applied, down_keep, o_keep, plan_weights, removed_channels, removed_groups
from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.reconstruct import least_squares
from prunehive.workers.structure.select import Scores, activation_scores, choose, taylor_scores
from prunehive.workers.structure.stats import collect, taylor
from prunehive.workers.structure.units import discover
from prunehive.workers.tasks.base import Split, Task

SOLVERS = {"mask": "plain removal", "sparsegpt": "least-squares reconstruction of o_proj and down_proj"}
IMPORTANCE_OF_METRIC = {"magnitude": "activation", "activation": "activation", "taylor": "taylor"}


def importance_name(metric: str) -> str:
    """The structured importance a prune ``metric`` names: magnitude (or activation) and taylor."""
    if metric not in IMPORTANCE_OF_METRIC:
        raise ValueError(
            f"metric {metric!r} does not score structured units; choose magnitude (activation, Minitron) "
            "or taylor (LLM-Pruner)"
        )
    return IMPORTANCE_OF_METRIC[metric]


def check_solver(solver: str) -> str:
    if solver not in SOLVERS:
        raise ValueError(f"solver {solver!r} is not one of {', '.join(SOLVERS)} for structured pruning")
    return solver


@dataclass
class Pruned:
    """A plan, the full-shaped weights that realise it and its evaluation."""

    plan: StructurePlan
    weights: dict[str, torch.Tensor]
    result: EvalResult


class StructuredPruner:
    """One task's model, its decoder structure and its units' importance, ready to prune at any target."""

    def __init__(
        self,
        task: Task,
        granularity: str,
        importance: str = "activation",
        calibration_batches: int = 8,
    ) -> None:
        self.task, self.granularity = task, granularity
        self.model = task.model()
        self.structure = discover(self.model, granularity, f"task {task.name!r}")
        self.calibration = task.calibration_batches(calibration_batches)
        self.total_flops, self.module_flops = count_flops(self.model, task.example_input())
        self.total_params = count_params(self.model)
        self.prunable = prunable_params(self.structure, granularity)
        self.importance = importance_name(importance) if importance in IMPORTANCE_OF_METRIC else importance
        self.scores = self._scores()

    def _scores(self) -> Scores:
        if self.importance == "taylor":
            return taylor_scores(taylor(self.task, self.model, self.structure, self.calibration))
        if self.importance != "activation":
            raise ValueError(f"importance {self.importance!r} is not one of activation, taylor")
        return activation_scores(self.structure, collect(self.model, self.structure, self.calibration, grams=False))

    @property
    def names(self) -> list[str]:
        return self.structure.linears

    def plan(self, sparsity: float, allocation: str = "global") -> StructurePlan:
        return choose(self.structure, self.scores, self.granularity, sparsity, allocation)

    def weights(self, plan: StructurePlan, solver: str = "sparsegpt") -> dict[str, torch.Tensor]:
        """The plan's full-shaped weights: consumers refitted block by block (``sparsegpt``) or not (``mask``)."""
        if check_solver(solver) == "mask":
            return plan_weights(self.model, self.structure, plan)
        consumers: dict[str, torch.Tensor] = {}
        done = StructurePlan.dense(len(plan.blocks))
        for b, p in zip(self.structure.blocks, plan.blocks, strict=True):
            if not p.removed and (removed_groups(b, p) or removed_channels(b, p)):
                with applied(
                    self.model, self.structure, done, plan_weights(self.model, self.structure, done, consumers)
                ):
                    stats = collect(self.model, self.structure, self.calibration, blocks=[b.index])[b.index]
                modules = dict(self.model.named_modules())
                if p.attention and removed_groups(b, p) and stats.o_gram is not None:
                    name = b.proj("o_proj")
                    consumers[f"{name}.weight"] = least_squares(
                        modules[name].weight.detach(), stats.o_gram, o_keep(b, p)
                    )
                if p.mlp and removed_channels(b, p) and stats.down_gram is not None:
                    name = b.proj("down_proj")
                    consumers[f"{name}.weight"] = least_squares(
                        modules[name].weight.detach(), stats.down_gram, down_keep(b, p)
                    )
            done = StructurePlan(done.blocks[: b.index] + (p,) + done.blocks[b.index + 1 :])
        return plan_weights(self.model, self.structure, plan, consumers)

    def measure(self, plan: StructurePlan) -> tuple[float, dict[str, float], int, int]:
        """Achieved sparsity (of the prunable parameters), each projection's removed fraction, the smaller
        model's parameters and forward FLOPs."""
        removed = removed_params(self.structure, plan)
        achieved = removed / self.prunable if self.prunable else 0.0
        flops = plan_flops(self.structure, plan, self.total_flops, self.module_flops)
        return achieved, layer_fractions(self.structure, plan), self.total_params - removed, flops

    def evaluate(
        self,
        plan: StructurePlan,
        weights: dict[str, torch.Tensor] | None = None,
        splits: tuple[Split, ...] = ("validation",),
        limit: int | None = None,
    ) -> EvalResult:
        start = time.perf_counter()
        with applied(self.model, self.structure, plan, weights):
            metrics = score_splits(self.task, self.model, splits, limit, None)
        achieved, layers, params, flops = self.measure(plan)
        return EvalResult(metrics, achieved, layers, params, flops, time.perf_counter() - start)

    def prune(
        self,
        sparsity: float,
        allocation: str = "global",
        solver: str = "sparsegpt",
        splits: tuple[Split, ...] = ("validation",),
    ) -> Pruned:
        plan = self.plan(sparsity, allocation)
        weights = self.weights(plan, solver)
        return Pruned(plan, weights, self.evaluate(plan, weights, splits))

    def dense(self, splits: tuple[Split, ...] = ("validation",)) -> EvalResult:
        return self.evaluate(StructurePlan(tuple(BlockPlan() for _ in self.structure.blocks)), {}, splits)
