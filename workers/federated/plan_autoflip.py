"""``autoflip``: federated loss-landscape exploration guiding hybrid pruning (AutoFLIP; Internò et al., 2024).

What the paper does: before pruning, the clients explore their loss landscapes for a few rounds;
the server pools how far and where their parameters moved into per-layer and per-parameter
importance, and that guidance prunes both structures (whole channels and filters) and individual
weights, so each layer loses what its clients' losses are least sensitive to. The compressed model
then trains on.

What this implementation changes:
- Exploration is the first few rounds of dense FedAvg (``min(3, max(1, rounds // 5))``): the
  clients' ordinary local training is the walk over their landscapes; no extra perturbation passes.
- Guidance: each weight's movement is the example-weighted mean over clients of ``|w_client - w_global|``,
  summed over the exploration rounds. A layer's importance is its mean movement relative to its mean
  magnitude (a layer whose weights move far sits on a steep part of the landscape).
- Allocation: layers start from ERK's sparsities (small layers denser) and move below or above them by
  their standardised log importance (0.15 per standard deviation), projected exactly onto the budget.
- Hybrid pruning: in every layer but the output one, the lowest-importance output channels go whole
  (a share of the layer's sparsity that grows as the layer's importance falls, at most half of it);
  the rest of the layer's budget goes weight by weight by ``|w| * movement``. Channels are masked,
  not physically removed; their FLOPs count as removed in the cost columns.
- After pruning the masks stay fixed (sparse FedAvg fine-tuning).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import Grid

from prunehive.workers.federated.aggregation import collect_updates
from prunehive.workers.federated.plan_common import NamedPlanStrategy, top_k_mask
from prunehive.workers.federated.plans import TierMasks
from prunehive.workers.federated.strategy import RoundRecord

SPREAD = 0.15  # sparsity per standard deviation of log importance
CHANNEL_SHARE = 0.5  # at most this share of a layer's sparsity is whole channels


class AutoFLIPStrategy(NamedPlanStrategy):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.explore = min(3, max(1, self.settings.rounds // 5))
        self.movement = {n: torch.zeros_like(self.state[n]) for n in self.prunable}

    def update_masks(self, server_round: int, grid: Grid, nodes: list[int], record: RoundRecord) -> None:
        if server_round == self.explore + 1:
            self.set_masks(self.guided_masks())

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        if server_round <= self.explore:
            updates, _ = collect_updates(replies, self.sent, self.state)
            total = sum(u.weight for u in updates)
            for u in updates:
                for n in self.prunable:
                    self.movement[n] += u.weight / total * (u.state[n] - self.state[n]).abs()
        return super().aggregate_train(server_round, replies)

    def layer_importance(self) -> dict[str, float]:
        """A layer's mean movement relative to its mean magnitude."""
        return {
            n: float(self.movement[f"{n}.weight"].mean()) / max(float(self.state[f"{n}.weight"].abs().mean()), 1e-12)
            for n in self.plan.space.names
        }

    def layer_sparsities(self, importance: dict[str, float]) -> dict[str, float]:
        """Each layer's sparsity: ERK's, shifted by its standardised log importance, then repaired."""
        space = self.plan.space
        logs = np.log(np.maximum(np.array([importance[n] for n in space.names]), 1e-12))
        z = (logs - logs.mean()) / (logs.std() or 1.0)
        erk = self.allocation_masks({n: self.state[n].abs() for n in self.prunable}, "erk")
        anchor = np.array([1.0 - float(erk[f"{n}.weight"].float().mean()) for n in space.names])
        vector = space.repair(anchor - SPREAD * z)
        return {n: float(v) for n, v in zip(space.names, vector, strict=True)}

    def guided_masks(self) -> TierMasks:
        importance = self.layer_importance()
        sparsity = self.layer_sparsities(importance)
        top = max(importance.values()) or 1.0
        masks: TierMasks = {}
        output_layer = self.plan.space.names[-1]
        for n, layer in self.layers.items():
            w, move = self.state[f"{n}.weight"], self.movement[f"{n}.weight"]
            score = w.abs() * move
            keep = round((1.0 - sparsity[n]) * layer.params)
            rows = score.reshape(score.shape[0], -1)
            if n != output_layer:
                share = CHANNEL_SHARE * (1.0 - importance[n] / top)
                drop = math.floor(share * sparsity[n] * rows.shape[0])
                drop = min(drop, rows.shape[0] - math.ceil(keep / rows.shape[1]))  # the kept weights must fit
                if drop > 0:
                    gone = torch.topk(rows.sum(1), drop, largest=False).indices
                    rows = rows.clone()
                    rows[gone] = -math.inf
            masks[f"{n}.weight"] = top_k_mask(rows.reshape(score.shape), keep)
        return masks


STRATEGY = AutoFLIPStrategy
