"""Mask-aware aggregation: pure functions over clients' replies, with no Flower state.

Each weight is averaged over the clients whose mask keeps it (weighted by their example counts),
so a weight pruned by a client is not pulled towards zero by it. Importance scores are
aggregated the same way: a weight's score is the weighted mean of the scores of the clients that
trained it, and zero where no one did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from flwr.app import Message

from prunehive.workers.federated.encoding import Masks, decode

STATS_KEY = "stats"  # the ArrayRecord of per-input-channel activation norms (Wanda's X), if sent
SUBMASKS_KEY = "submasks"  # downlink: the sparser tiers' nested masks, which the client also trains


@dataclass
class ClientUpdate:
    """One client's decoded reply: dense tensors, the masks it trained under, its weight."""

    node_id: int
    state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    weight: float
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def masked_average(updates: list[ClientUpdate], previous: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-weight weighted mean over the clients that keep it; ``previous`` where nobody does."""
    out: dict[str, torch.Tensor] = {}
    for name, prev in previous.items():
        num = torch.zeros_like(prev, dtype=torch.float64)
        den = torch.zeros_like(prev, dtype=torch.float64)
        for u in updates:
            mask = u.masks.get(name)
            keep = torch.ones_like(den) if mask is None else mask.to(torch.float64)
            num += u.weight * keep * u.state[name].to(torch.float64)
            den += u.weight * keep
        held = den > 0
        out[name] = torch.where(held, num / den.clamp_min(1e-12), prev.to(torch.float64)).to(prev.dtype)
    return out


def client_scores(update: ClientUpdate, name: str, metric: str) -> torch.Tensor:
    """A client's importance of each weight: |W| (magnitude) or |W| times its input norm (Wanda)."""
    weight = update.state[name].abs()
    if metric == "wanda" and name in update.stats:
        shape = [1, -1] + [1] * (weight.dim() - 2)
        weight = weight * update.stats[name].reshape(shape)
    return weight


def aggregate_scores(updates: list[ClientUpdate], names: Iterable[str], metric: str) -> dict[str, torch.Tensor]:
    """Weighted mean of clients' scores over the clients that trained each weight; 0 elsewhere."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        num: torch.Tensor | None = None
        den: torch.Tensor | None = None
        for u in updates:
            mask = u.masks.get(name)
            score = client_scores(u, name, metric).to(torch.float64)
            keep = torch.ones_like(score) if mask is None else mask.to(torch.float64)
            num = u.weight * keep * score if num is None else num + u.weight * keep * score
            den = u.weight * keep if den is None else den + u.weight * keep
        if num is None or den is None:
            raise ValueError("no client updates to aggregate scores from")
        out[name] = torch.where(den > 0, num / den.clamp_min(1e-12), torch.zeros_like(num))
    return out


def collect_updates(
    replies: Iterable[Message], sent_masks: Mapping[int, Masks | None], template: Mapping[str, torch.Tensor]
) -> tuple[list[ClientUpdate], list[Message]]:
    """Decode the good replies (values under the mask sent to that node); return the failed ones apart."""
    updates: list[ClientUpdate] = []
    failed: list[Message] = []
    for msg in replies:
        if msg.has_error():
            failed.append(msg)
            continue
        node = int(msg.metadata.src_node_id)
        content = msg.content
        state, masks = decode(content.array_records["arrays"], template, sent_masks.get(node))
        metrics = {k: float(v) for k, v in content.metric_records["metrics"].items()}  # type: ignore[arg-type]
        stats: dict[str, torch.Tensor] = {}
        if STATS_KEY in content.array_records:
            stats = {k: torch.from_numpy(a.numpy().copy()) for k, a in content.array_records[STATS_KEY].items()}
        weight = float(metrics.get("num-examples", 1.0))
        updates.append(ClientUpdate(node, state, masks, weight, stats, metrics))
    return updates, failed
