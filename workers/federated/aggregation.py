"""Mask-aware aggregation: pure functions over clients' replies, with no Flower state.

Each weight is averaged over the clients whose mask keeps it (weighted by their example counts),
so a weight pruned by a client is not pulled towards zero by it. (Importance is scored on the
aggregated model from pooled calibration statistics: see ``statistics.py``.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from flwr.app import Message

from prunehive.workers.federated.encoding import Masks, decode

SUBMASKS_KEY = "submasks"  # downlink: the sparser tiers' nested masks, which the client also trains


@dataclass
class ClientUpdate:
    """One client's decoded reply: dense tensors, the masks it trained under, its weight."""

    node_id: int
    state: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    weight: float
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
        # wire boundary: the client's numbers arrive in the Flower MetricRecord named "metrics"
        metrics = {k: float(v) for k, v in content.metric_records["metrics"].items()}  # type: ignore[arg-type]
        weight = float(metrics.get("num-examples", 1.0))
        updates.append(ClientUpdate(node, state, masks, weight, metrics))
    return updates, failed
