"""One federated simulation on Flower's simulation engine (Ray backend), without any tracking.

The platform's driver (``prunehive.platform.jobs.federated.driver``) calls :func:`simulate` and gets each
round's record through ``on_round`` as it finishes. Flower's Ray backend attaches to the Ray the
process already started (``ray.is_initialized()``), so clients run on the platform's Ray; note
that it calls ``ray.shutdown()`` when the simulation ends, so a second simulation connects again.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from prunehive.search.space import SearchSpace
from prunehive.workers.federated.client_app import app as client_app
from prunehive.workers.federated.encoding import dense_record
from prunehive.workers.federated.models import start_model, train_rows
from prunehive.workers.federated.partition import partition_indices
from prunehive.workers.federated.plans import NAMED_PLANS, MaskPlan, named_plan_module
from prunehive.workers.federated.statistics import Scoring, stats_asked
from prunehive.workers.federated.strategy import PruningFedAvg, RoundRecord
from prunehive.workers.layers import find_prunable_layers
from prunehive.workers.masks import Granularity
from prunehive.workers.quiet import quiet_flower
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.base import Task, seed_everything

quiet_flower()  # at once: importing flwr.simulation changed process-wide warning filters (see workers.quiet)

ACTOR_RESTARTS = 3  # a client process that dies is restarted for later rounds (its own reply is an error)


@dataclass
class SimulationSettings:
    """Everything one simulation needs, as plain values (built from the job spec by the driver)."""

    task: str
    plan: str  # "dense" | "fixed" | "progressive" | "heterogeneous" | one of plans.NAMED_PLANS
    targets: list[float]
    clients: int = 10
    fraction: float = 1.0
    rounds: int = 20
    local_epochs: int = 3
    batch_size: int = 32
    lr: float | None = None
    partition_kind: str = "iid"
    partition_value: float = 0.0
    seed: int = 0
    task_seed: int = 0
    metric: str = "magnitude"
    granularity: str = "unstructured"
    per_row: bool = False
    calibration_batches: int = 8  # per client, when the metric reads calibration statistics
    allocation: str | dict[str, float] = "uniform"
    ramp_rounds: int | None = None
    min_density: float = 0.01
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    cpus_per_client: float = 1.0
    gpus_per_client: float = 0.0
    round_timeout: float = 600.0
    client_budget: dict[str, float] = field(default_factory=dict)  # fedtiny: {memory_mb: x} or {flops: fraction}
    mask_interval: int | None = None  # named plans: rounds between mask re-adjustments (default: the plan's)


@dataclass
class SimulationResult:
    history: list[RoundRecord]
    targets: list[float]  # the plan's target per tier
    tier_sparsity: list[float]
    layer_sparsity: list[dict[str, float]]  # per tier, by layer name
    final_state: dict[str, torch.Tensor]

    def totals(self) -> dict[str, int]:
        keys = ("bytes_up", "bytes_down", "dense_bytes_up", "dense_bytes_down", "failures")
        out = {k: int(sum(getattr(r, k) for r in self.history)) for k in keys}
        out["client_flops"] = int(sum(r.client_flops for r in self.history))
        out["peak_client_bytes"] = max((r.peak_client_bytes for r in self.history), default=0)
        return out


def _evaluator(task: Task) -> Callable[[dict[str, torch.Tensor]], float]:
    model = start_model(task)

    def evaluate(state: dict[str, torch.Tensor]) -> float:
        model.load_state_dict(state)
        return float(task.evaluate(model, "test").quality)

    return evaluate


def build_strategy(s: SimulationSettings, on_round: Callable[[RoundRecord], None]) -> PruningFedAvg:
    """The task's initial model (seeded), its prunable layers, the plan and the strategy around them."""
    task = load_task(s.task, seed=s.task_seed)
    if task.quality != "accuracy":
        raise ValueError(f"task: federated runs need a classification task; {task.name} reports {task.quality}")
    partition_indices(train_rows(task)[1].numpy(), s.partition_kind, s.partition_value, s.clients, s.seed)
    seed_everything(s.seed)
    model = start_model(task)
    granularity = Granularity.parse(s.granularity, per_row=s.per_row)
    names = task.channel_prunable_layers(model) if granularity.kind == "channel" else task.prunable_layers(model)
    # As in a search: N:M leaves dense the layers whose rows do not split into whole groups.
    layers = [x for x in find_prunable_layers(model, names, task.example_input()) if granularity.supports(x.shape)]
    if not layers:
        raise ValueError(f"pruning.granularity: {task.name} has no layer that {granularity.label} pruning can apply to")
    names = [x.name for x in layers]
    targets = sorted(s.targets)
    if s.plan == "fixed" and isinstance(s.allocation, dict):  # explicit per-layer numbers set the target
        targets = [sum(s.allocation.get(x.name, 0.0) * x.params for x in layers) / sum(x.params for x in layers)]
    space = SearchSpace(layers, target=max(targets), min_density=s.min_density, overrides=dict(s.bounds))
    ramp_rounds = s.ramp_rounds or max(1, s.rounds // 4)
    named = s.plan in NAMED_PLANS  # a named plan's strategy derives its own masks; its MaskPlan holds the target
    plan = MaskPlan("fixed" if named else s.plan, targets, space, s.allocation, ramp_rounds, granularity)
    scoring = Scoring(
        s.metric,
        stats_asked(s.metric, s.allocation),
        seed=s.seed,
        calibration_batches=s.calibration_batches,
        reference_rows=s.calibration_batches * (task.calibration_batch_size or task.batch_size),
    )
    client_config: dict[str, Any] = {
        "task": s.task,
        "task-seed": s.task_seed,
        "seed": s.seed,
        "partition-kind": s.partition_kind,
        "partition-value": float(s.partition_value),
        "partitions": s.clients,
        "partition-seed": s.seed,
        "local-epochs": s.local_epochs,
        "batch-size": s.batch_size,
        "lr": float(s.lr or 0.0),
        "prunable": [f"{n}.weight" for n in names],
    }
    strategy = importlib.import_module(named_plan_module(s.plan)).STRATEGY if named else PruningFedAvg
    return strategy(  # type: ignore[no-any-return]
        plan,
        {n: t.detach().clone() for n, t in model.state_dict().items()},
        client_config,
        scoring,
        _evaluator(task),
        on_round,
        fraction=s.fraction,
        clients=s.clients,
        timeout=s.round_timeout,
        **({"settings": s, "task": task} if named else {}),
    )


def simulate(s: SimulationSettings, on_round: Callable[[RoundRecord], None]) -> SimulationResult:
    """Run ``s.rounds`` rounds of Flower's simulation engine; ``on_round`` sees each finished round."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    quiet_flower()
    strategy = build_strategy(s, on_round)
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy.assign_tiers(grid, s.round_timeout)
        strategy.start(
            grid,
            dense_record(strategy.state),
            num_rounds=s.rounds,
            timeout=s.round_timeout,
            evaluate_fn=strategy.evaluate_global,
        )

    resources: dict[str, Any] = {
        "num_cpus": s.cpus_per_client,
        "num_gpus": s.gpus_per_client,
        "max_restarts": ACTOR_RESTARTS,  # passed through to the client actors' Ray options
    }
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=s.clients,
        backend_config={"client_resources": resources},
    )
    if len(strategy.history) < s.rounds:
        raise RuntimeError(f"the simulation stopped after {len(strategy.history)} of {s.rounds} rounds")
    names = strategy.plan.space.names
    layer_sparsity = []
    for t in range(strategy.plan.tiers):
        masks = strategy.tier_masks(t) or {}
        layer_sparsity.append({n: 1.0 - float(masks[f"{n}.weight"].float().mean()) if masks else 0.0 for n in names})
    return SimulationResult(
        strategy.history, list(strategy.plan.targets), strategy.sparsities(), layer_sparsity, strategy.state
    )
