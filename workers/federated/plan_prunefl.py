"""``prunefl``: adaptive pruning during federated training (PruneFL; Jiang et al., 2022).

What the paper does: one powerful client prunes the model first on its own data; then, while FedAvg
trains, the mask is reconfigured at intervals. Every parameter's importance is its squared gradient
summed since the last reconfiguration (the first-order estimate of how much training it would lower
the loss), and the kept set maximises that importance per unit of the time a round costs (a
computation and a communication term per parameter, fitted from measured round times), so the model
size itself adapts.

What this implementation changes:
- The size does not adapt: the mask keeps exactly ``pruning.sparsity`` of the prunable weights, so
  the plan compares with the others at the same sparsity. What adapts is where the weights are.
- Cost per weight is not fitted from wall-clock times (simulated clients share one machine): a
  weight's cost is half communication (the same for every weight: its value goes down and up every
  round) and half computation (its layer's forward FLOPs per weight, relative to the mean), so a
  convolution weight, reused at every position, costs more than a linear one.
- Importance is normalised per layer (gradient scales differ across layers at initialisation) and
  every layer keeps at least half of what an ERK allocation would give it, so no layer collapses.
- Importance is the squared gradient pooled (as ``query.stats`` F: sums and counts) from a random
  30% of the round's clients, decayed by half at every reconfiguration, so weights that mattered
  earlier keep some credit. The initial pruning reads one client (the first sampled).
- Reconfiguration happens every ``federated.mask_interval`` rounds (default a fifth of the rounds)
  until 70% of the rounds; grown weights start at zero.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from flwr.serverapp import Grid

from prunehive.workers.federated.plan_common import NamedPlanStrategy, global_keep
from prunehive.workers.federated.strategy import RoundRecord

PROBE_FRACTION = 0.3  # of the round's clients measure importance
DECAY = 0.5  # weight of the earlier importance at each reconfiguration
LAST = 0.7  # no reconfiguration after this fraction of the rounds
FLOOR = 0.5  # every layer keeps at least this share of what ERK would keep, so none collapses


def weight_costs(flops: dict[str, int], params: dict[str, int]) -> dict[str, float]:
    """Per layer: the cost of keeping one of its weights, half communication and half computation."""
    per_weight = {n: flops[n] / max(params[n], 1) for n in flops}
    mean = sum(per_weight[n] * params[n] for n in flops) / max(sum(params.values()), 1)
    return {n: 0.5 + 0.5 * per_weight[n] / max(mean, 1e-12) for n in flops}


class PruneFLStrategy(NamedPlanStrategy):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.costs = weight_costs(
            {n: x.flops for n, x in self.layers.items()}, {n: x.params for n, x in self.layers.items()}
        )
        self.importance: dict[str, torch.Tensor] = {}
        self.rng = np.random.default_rng(self.settings.seed)

    def reconfigures_at(self, server_round: int) -> bool:
        last = max(1, int(LAST * self.settings.rounds))
        return server_round == 1 or (server_round - 1) % self.interval == 0 and server_round <= last

    def update_masks(self, server_round: int, grid: Grid, nodes: list[int], record: RoundRecord) -> None:
        if not self.reconfigures_at(server_round):
            return
        if server_round == 1:
            probe = nodes[:1]
        else:
            k = max(1, math.ceil(PROBE_FRACTION * len(nodes)))
            probe = [nodes[int(i)] for i in self.rng.choice(len(nodes), size=k, replace=False)]  # ids exceed int64
        fisher = self.query_fisher(grid, probe, list(self.layers), record)
        for name, value in fisher.items():
            self.importance[name] = value + DECAY * self.importance[name] if name in self.importance else value
        scores = {
            f"{n}.weight": self.importance[f"{n}.weight"]
            / max(float(self.importance[f"{n}.weight"].mean()), 1e-30)
            / self.costs[n]
            for n in self.layers
        }
        erk = self.allocation_masks({n: self.state[n].abs() for n in self.prunable}, "erk")
        floor = {n: math.ceil(FLOOR * int(m.sum())) for n, m in erk.items()}
        total = round((1.0 - self.target) * self.total_prunable)
        self.set_masks(global_keep(scores, total, floor))


STRATEGY = PruneFLStrategy
