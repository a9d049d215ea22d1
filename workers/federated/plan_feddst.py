"""``feddst``: federated dynamic sparse training (FedDST; Bibikar et al., AAAI 2022).

What the paper does: the model is sparse from the start (a random mask, ERK-distributed across
layers). Clients train only the kept weights, and every few rounds each client re-adjusts its own
mask after local training: it prunes the kept weights of smallest magnitude and grows as many pruned
ones by gradient magnitude (RigL's rule), with the adjusted fraction decaying over time. The server
aggregates the clients' masks by majority vote under the sparsity budget and averages each weight
over the clients that kept it; uplink stays sparse throughout.

What this implementation changes:
- Re-adjustment rounds are every ``federated.mask_interval`` rounds (default a fifth of the rounds)
  from round 2 until 75% of the rounds; the swapped fraction starts at 30% of each layer's kept
  weights and decays by a cosine (the paper's schedule, with its constants).
- Gradients for growth are one pass over up to 4 of the client's batches at the end of its training.
- The vote is weighted by each client's examples; ties are broken by the aggregated magnitude, and
  each layer keeps exactly the number of weights it had, so the sparsity is exact every round.
- A client that re-adjusted sends its new mask (one bit per weight) along with its kept values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from prunehive.workers.apply import apply
from prunehive.workers.federated.aggregation import ClientUpdate, collect_updates
from prunehive.workers.federated.client_app import _num, app, local_data, reapply, received_model
from prunehive.workers.federated.client_cost import plain_loss, training_cost
from prunehive.workers.federated.encoding import dense_record, encode
from prunehive.workers.federated.plan_common import NamedPlanStrategy, adjust_fraction, prune_and_grow, top_k_mask
from prunehive.workers.federated.plans import TierMasks
from prunehive.workers.federated.strategy import RoundRecord, apply_masks

ACTION = "feddst"
LAST = 0.75  # no re-adjustment after this fraction of the rounds
GRAD_BATCHES = 4


def vote_masks(
    updates: list[ClientUpdate], current: Mapping[str, torch.Tensor], values: Mapping[str, torch.Tensor]
) -> TierMasks:
    """The server's masks: per tensor, the weights most clients (by examples) kept, as many as ``current`` keeps."""
    out: TierMasks = {}
    for name, mask in current.items():
        votes = torch.zeros(mask.shape, dtype=torch.float64)
        for u in updates:
            votes += u.weight * u.masks.get(name, mask).to(torch.float64)
        magnitude = values[name].abs().to(torch.float64)
        tie = magnitude / (magnitude.max() + 1e-12) * 1e-6 * max(float(votes.max()), 1.0)
        out[name] = top_k_mask(votes + tie, int(mask.sum()))
    return out


def readjust(
    model: torch.nn.Module, masks: Mapping[str, torch.Tensor], grads: Mapping[str, torch.Tensor], fraction: float
) -> TierMasks:
    """A client's new masks: ``fraction`` of each tensor's kept weights pruned by magnitude and regrown by gradient."""
    params = dict(model.named_parameters())
    out: TierMasks = {}
    for name, mask in masks.items():
        count = math.floor(fraction * int(mask.sum()))
        out[name] = prune_and_grow(params[name].detach(), mask, grads[name].abs(), count)
    apply(model, out)
    return out


class FedDSTStrategy(NamedPlanStrategy):
    train_action = ACTION
    state: dict[str, torch.Tensor]  # for mypy, which cannot infer it through the import cycle

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        gen = torch.Generator().manual_seed(self.settings.seed)
        random = {n: torch.rand(self.state[n].shape, generator=gen) for n in self.prunable}
        self.set_masks(self.allocation_masks(random, "erk"))

    def round_config(self, server_round: int) -> dict[str, Any]:
        last = max(2, int(LAST * self.settings.rounds))
        due = server_round > 1 and (server_round - 1) % self.interval == 0
        return {"readjust": adjust_fraction(server_round, 2, last) if due else 0.0}

    def update_masks(self, server_round: int, grid: Grid, nodes: list[int], record: RoundRecord) -> None:
        """The masks are set at the start and by the vote after each round."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        updates, _ = collect_updates(replies, self.sent, self.state)
        arrays, metrics = super().aggregate_train(server_round, replies)
        current = self.tier_masks(0)
        if updates and current is not None and self.round_config(server_round)["readjust"] > 0:
            self.set_masks(vote_masks(updates, current, self.state))
            self.state = apply_masks(self.state, self.tier_masks(0))
            arrays = dense_record(self.state)
        return arrays, metrics


def gradients(
    task: Any, model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """Summed gradients of the loss over ``batches``, every weight included (pruned ones are zeros, not frozen)."""
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        task.loss_fn(model(x), y).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


@app.train(ACTION)
def feddst_train(msg: Message, context: Context) -> Message:
    """Sparse local training, then (when the server asks) a prune-and-grow re-adjustment of the client's masks."""
    torch.set_num_threads(1)
    cfg = msg.content.config_records["config"]
    pid = int(context.node_config["partition-id"])
    task, x, y = local_data(cfg, pid)
    model, masks = received_model(msg, task)
    batch = int(_num(cfg, "batch-size"))
    steps = int(_num(cfg, "local-epochs")) * math.ceil(len(x) / batch)
    cost = training_cost(model, plain_loss(task.loss_fn), (x[:batch], y[:batch]), masks, steps)
    mean_loss = task.train(
        model,
        steps,
        lr=_num(cfg, "lr") or None,
        after_step=reapply(model, masks),
        seed=int(_num(cfg, "seed")) * 1_000_003 + int(_num(cfg, "server-round")) * 1_009 + pid,
        data=(x, y),
        batch_size=batch,
        cosine=False,
    )
    fraction = _num(cfg, "readjust")
    if fraction > 0:
        batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, min(len(x), GRAD_BATCHES * batch), batch)]
        masks = readjust(model, masks, gradients(task, model, batches), fraction)
    metrics = {"num-examples": len(x), "train-loss": mean_loss, "accuracy": task.evaluate(model, "test").quality}
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        "arrays": encode(model.state_dict(), masks, send_masks=fraction > 0),
        "metrics": MetricRecord({**metrics, **cost.metrics()}),
    }
    return Message(RecordDict(records), reply_to=msg)


STRATEGY = FedDSTStrategy
