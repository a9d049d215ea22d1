"""Federated evaluation of search candidates: a pruning engine whose data stays on Flower clients.

``FederatedEngine`` is the workers' ``PruningEngine`` with its two uses of data moved to the clients:
- statistics: at build, every client computes the calibration statistics the metric (and OWL) reads on
  its own rows; the server pools their sums and counts (``statistics.PooledStats``) and ranks the weights
  by them, so a candidate's masks come from the ranking as in a central search;
- scoring: each candidate's masked model is sent to a sample of clients in ``evaluate`` messages, and its
  score is the example-weighted mean of their accuracies; with ``recovery_rounds`` it first gets that many
  rounds of sparse FedAvg (``train`` messages) from the dense weights.

The server holds the model (a federation's global model) and reads one input row's shape to trace it; it
never calibrates, trains or scores on data of its own. The sample of clients is drawn once from the job's
seed, and a search stage's share of it grows with the stage (``limit / stages[-1]`` of ``eval_fraction``),
so the candidates that compete in a stage meet the same clients, as central candidates meet the same
validation prefix. The final re-evaluation (any request with the test split) asks every client, so its
figures are the whole splits' and compare directly with a central search's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prunehive.workers.apply import masked
from prunehive.workers.calibration import ALL, LayerStats, Statistics, absent
from prunehive.workers.contracts import EvalResult
from prunehive.workers.engine import PruningEngine
from prunehive.workers.federated.local_grid import Listener, LocalGrid
from prunehive.workers.federated.search_client import search_app
from prunehive.workers.federated.search_rounds import federated_scores, pooled_statistics, sparse_fedavg
from prunehive.workers.federated.statistics import DATA_STATS, stats_asked
from prunehive.workers.structured import prune_channels
from prunehive.workers.tasks.base import Split, Task


@dataclass(frozen=True)
class FederatedEvaluation:
    """How candidates are scored on clients (plain values: the driver builds it from the spec's ``federated:``)."""

    task: str  # the task as one string (a name or an ``hf:`` mapping's JSON), as clients load it
    task_seed: int = 0
    clients: int = 10
    eval_fraction: float = 1.0
    stages: tuple[int, ...] = ()  # the search's fidelity stages (samples), if staged
    recovery_rounds: int = 0
    fraction: float = 1.0  # clients per recovery round
    local_epochs: int = 1
    batch_size: int = 32
    lr: float | None = None  # recovery training; default a tenth of the task's, as central recovery
    partition_kind: str = "iid"
    partition_value: float = 0.0
    seed: int = 0

    def client_config(self, prunable: list[str], task_lr: float) -> dict[str, int | float | str | list[str]]:
        """What every message's ``config`` record carries (the federated jobs' client keys)."""
        return {
            "task": self.task,
            "task-seed": self.task_seed,
            "seed": self.seed,
            "partition-kind": self.partition_kind,
            "partition-value": float(self.partition_value),
            "partitions": self.clients,
            "partition-seed": self.seed,
            "local-epochs": self.local_epochs,
            "batch-size": self.batch_size,
            "lr": float(self.lr or task_lr * 0.1),
            "prunable": prunable,
        }


class FederatedStatistics(Statistics):
    """An engine's statistics pooled from clients: W is the live weight, X, G and F what clients sent.
    Nothing here ever runs a calibration pass (the server has no calibration data)."""

    def __init__(self, model: nn.Module, names: list[str], pooled: Mapping[str, LayerStats], asked: Iterable[str]):
        modules = dict(model.named_modules())
        self.model, self.names, self.batches = model, names, 0
        self.weights = {n: modules[n].weight for n in names}
        self.pooled = dict(pooled)
        asked = set(asked)
        self.norms = None
        self.G = {n: s.G for n, s in self.pooled.items()} if "G" in asked else {}
        self.F = {n: s.F for n, s in self.pooled.items()} if "F" in asked else {}

    def _calib(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise RuntimeError("federated evaluation has no central calibration data")

    def layer(self, name: str, reads: Iterable[str] = ALL) -> LayerStats:
        reads, w, s = set(reads), self.weights[name].detach(), self.pooled[name]
        return LayerStats(
            W=w,
            X=s.X if "X" in reads else absent(w),
            G=s.G if "G" in reads and name in self.G else absent(w),
            F=s.F if "F" in reads and name in self.F else absent(w),
        )


class FederatedEngine(PruningEngine):
    """A pruning engine whose statistics and scores come from Flower clients (see the module docstring)."""

    def __init__(
        self,
        task: Task,
        settings: FederatedEvaluation,
        metric: str = "magnitude",
        granularity: str = "unstructured",
        per_row: bool = False,
        calibration_batches: int = 8,
        seed: int = 0,
        device: str = "cpu",
        with_grads: bool | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        """``listeners`` see every message the server sends and the reply it gets, from the first on."""
        if task.quality != "accuracy":
            raise ValueError(
                f"search.evaluation: federated needs a classification task; {task.name} reports {task.quality}"
            )
        # Magnitude reads W alone, so building the engine touches no data; the metric's ranking follows.
        super().__init__(task, "magnitude", granularity, per_row, calibration_batches, seed, device, with_grads=False)
        self.settings = settings
        self.grid = LocalGrid(search_app, settings.clients)
        self.grid.listeners.extend(listeners)
        self.config = settings.client_config([f"{n}.weight" for n in self.names], task.lr)
        self.dense_state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        self.order = [int(i) for i in np.random.default_rng(settings.seed).permutation(settings.clients)]
        asked = set(DATA_STATS) if with_grads else set(stats_asked(metric, "owl"))  # OWL reads X
        self.stats = self._pooled(asked, calibration_batches)
        self.use_metric(metric)

    def _pooled(self, asked: set[str], calibration_batches: int) -> FederatedStatistics:
        """Statistics from every client, pooled: sums and counts only."""
        weights = {f"{n}.weight": self.dense_state[f"{n}.weight"] for n in self.names}
        rows = calibration_batches * (self.task.calibration_batch_size or self.task.batch_size)
        nodes = [self.grid.node_of(p) for p in range(self.settings.clients)]
        pooled = pooled_statistics(
            self.grid, nodes, self.dense_state, weights, asked, self.config, calibration_batches, rows
        )
        on_device = {
            n: LayerStats(s.W, s.X.to(self.device), s.G.to(self.device), s.F.to(self.device))
            for n, s in pooled.layer_stats().items()
        }
        return FederatedStatistics(self.model, self.names, on_device, asked)

    # ---- which clients ------------------------------------------------------------------
    def evaluation_nodes(self, splits: tuple[Split, ...], limit: int | None) -> list[int]:
        """The clients a candidate is scored on: every one for a report (the test split), else the first
        ``eval_fraction`` of the seeded order, a stage's share of it when the search is staged."""
        n, s = self.settings.clients, self.settings
        if "test" in splits:
            k = n
        else:
            share = s.eval_fraction * (min(1.0, limit / s.stages[-1]) if limit is not None and s.stages else 1.0)
            k = max(1, min(n, round(n * share)))
        return [self.grid.node_of(p) for p in self.order[:k]]

    def training_rounds(self) -> list[list[int]]:
        """The clients of each recovery round: ``fraction`` of them, drawn per round from the job's seed."""
        n, s = self.settings.clients, self.settings
        k = max(1, min(n, round(n * s.fraction)))
        rounds = []
        for r in range(s.recovery_rounds):
            order = np.random.default_rng([s.seed, r + 1]).permutation(n)
            rounds.append([self.grid.node_of(int(p)) for p in order[:k]])
        return rounds

    # ---- candidates ---------------------------------------------------------------------
    def _candidate_state(self, values: dict[str, float]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The candidate's keep-masks by parameter name and its model state, recovered where asked."""
        candidate = {n: m.cpu() for n, m in self.candidate(values).items()}
        state = masked(self.dense_state, candidate)
        if self.settings.recovery_rounds:
            state = sparse_fedavg(self.grid, self.training_rounds(), state, candidate, self.config)
        return candidate, state

    def evaluate(
        self,
        sparsity: Mapping[str, float] | Iterable[float],
        splits: tuple[Split, ...] = ("validation",),
        recovery_steps: int = 0,
        limit: int | None = None,
    ) -> EvalResult:
        """Masks from the pooled ranking, optional sparse FedAvg, then a federated evaluation."""
        if recovery_steps:
            raise ValueError("federated evaluation fine-tunes with federated.recovery_rounds, not recovery steps")
        start = time.perf_counter()
        values = self.as_dict(sparsity)
        candidate, state = self._candidate_state(values)
        nodes = self.evaluation_nodes(splits, limit)
        metrics = federated_scores(self.grid, nodes, state, candidate, splits, self.config)
        achieved, per_layer, params, flops = self._measure(values)
        return EvalResult(metrics, achieved, per_layer, params, flops, time.perf_counter() - start)

    def export(
        self, sparsity: Mapping[str, float] | Iterable[float], recovery_steps: int = 0, shrink: bool = True
    ) -> nn.Module:
        """The candidate's model as the search scored it: masked, after its recovery rounds where asked."""
        values = self.as_dict(sparsity)
        model = super().export(values, 0, shrink=False)  # a masked copy of the dense model
        if self.settings.recovery_rounds:
            _, state = self._candidate_state(values)
            model.load_state_dict({k: v.to(self.device) for k, v in state.items()})
        if self.granularity.kind != "channel" or not shrink:
            return model
        plan = {n: self.rankings[n].removed_channels(s) for n, s in values.items()}
        return prune_channels(model, plan, self.example)
