"""What the named federated plans share: a strategy base whose masks a plan derives its own way, the
statistics query they use to read clients' gradients, and exact-count mask operations.

A named plan's strategy keeps one tier (``plan.targets[0]`` is its sparsity) and overrides
``update_masks`` (called at the start of every round, before the round's model is sent). Clients
train with the default ``train`` action unless the plan names its own (``train_action``), which its
module registers on the same ``ClientApp``. Every byte of every exchange is counted, as in
``PruningFedAvg``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from prunehive.workers.calibration import LayerStats
from prunehive.workers.federated.encoding import dense_record, record_bytes
from prunehive.workers.federated.plans import MaskPlan, TierMasks, layer_sparsities, nested_masks
from prunehive.workers.federated.statistics import STATS_ACTION, PooledStats, Scoring
from prunehive.workers.federated.strategy import PruningFedAvg, RoundRecord, apply_masks
from prunehive.workers.tasks.base import Task

if TYPE_CHECKING:
    from prunehive.workers.federated.simulation import SimulationSettings


class NamedPlanStrategy(PruningFedAvg):
    """``PruningFedAvg`` with one tier whose masks ``update_masks`` sets, round by round."""

    train_action = ""  # the ClientApp action clients train with ("" is the default train function)
    state: dict[str, torch.Tensor]  # declared here too: mypy cannot infer it through the import cycle

    def __init__(
        self,
        plan: MaskPlan,
        initial: dict[str, torch.Tensor],
        client_config: dict[str, Any],
        scoring: Scoring,
        evaluate: Callable[[dict[str, torch.Tensor]], float],
        on_round: Callable[[RoundRecord], None],
        *,
        settings: SimulationSettings,
        task: Task,
        fraction: float = 1.0,
        clients: int = 2,
        timeout: float = 600.0,
    ) -> None:
        super().__init__(
            plan,
            initial,
            client_config,
            scoring,
            evaluate,
            on_round,
            fraction=fraction,
            clients=clients,
            timeout=timeout,
        )
        self.settings = settings
        self.task = task
        self.target = plan.targets[0]
        self.interval = settings.mask_interval or max(1, settings.rounds // 5)
        self.layers = {x.name: x for x in plan.space.layers}

    # -- hooks -----------------------------------------------------------------------------------
    def update_masks(self, server_round: int, grid: Grid, nodes: list[int], record: RoundRecord) -> None:
        """Set ``self.masks`` for this round (default: keep them)."""

    def round_config(self, server_round: int) -> dict[str, Any]:
        """Extra config entries of this round's train messages."""
        return {}

    def train_payload(self, cfg: ConfigRecord) -> RecordDict:
        """What every sampled client receives: the masked model (kept values + bitmasks) and the config."""
        return self._payload(0, cfg)

    # -- the round -------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._started = time.perf_counter()
        sample = max(int(len(list(grid.get_node_ids())) * self.fraction_train), self.min_train_nodes)
        nodes, _ = sample_nodes(grid, self.min_available_nodes, sample)
        self.current = RoundRecord(server_round, [], sampled=len(nodes))
        self.update_masks(server_round, grid, nodes, self.current)
        self.state = apply_masks(self.state, self.tier_masks(0))
        self.current.sparsity = self.sparsities()
        cfg = ConfigRecord({**self.client_config, "server-round": server_round, **self.round_config(server_round)})
        payload = self.train_payload(cfg)
        size = sum(record_bytes(r) for r in payload.array_records.values())
        kind = f"{MessageType.TRAIN}.{self.train_action}" if self.train_action else MessageType.TRAIN
        self.sent = {}
        messages = []
        for node in nodes:
            self.current.bytes_down += size
            self.current.dense_bytes_down += self.dense_bytes
            self.sent[node] = self.tier_masks(0)
            messages.append(Message(payload, dst_node_id=node, message_type=kind))
        return messages

    def set_masks(self, masks: TierMasks | None) -> None:
        self.masks = None if masks is None else [masks]

    # -- what plans ask clients ------------------------------------------------------------------
    def query_fisher(
        self, grid: Grid, nodes: list[int], names: list[str], record: RoundRecord
    ) -> dict[str, torch.Tensor]:
        """Mean squared gradients of the named layers' weights, pruned ones included, pooled from ``nodes``.

        The clients get the masked model dense (pruned weights as zeros, so every weight has a gradient)
        and reply through the ``query.stats`` action with F for these layers only."""
        arrays = dense_record(apply_masks(self.state, self.tier_masks(0)))
        cfg = ConfigRecord(
            {
                **self.client_config,
                "prunable": [f"{n}.weight" for n in names],
                "asked": ["F"],
                "calibration-batches": self.scoring.calibration_batches,
            }
        )
        content = RecordDict({"arrays": arrays, "config": cfg})
        asks = [Message(content, dst_node_id=n, message_type=f"{MessageType.QUERY}.{STATS_ACTION}") for n in nodes]
        record.bytes_down += len(asks) * record_bytes(arrays)
        pooled = PooledStats({f"{n}.weight": self.state[f"{n}.weight"] for n in names}, None, 1)
        replies = list(self.send(grid, asks, record, "gradients"))
        for reply in replies:
            pooled.add(reply)
        stats: dict[str, LayerStats] = pooled.layer_stats()
        return {f"{n}.weight": stats[n].F for n in names}

    def send(self, grid: Grid, asks: list[Message], record: RoundRecord, what: str) -> list[Message]:
        """Send ``asks``, count the good replies' bytes and every failure; return the good replies."""
        replies = list(grid.send_and_receive(asks, timeout=self.timeout))
        record.failures += max(0, len(asks) - len(replies))
        good = []
        for reply in replies:
            if reply.has_error():
                self._failed(reply, record, what)
                continue
            record.bytes_up += sum(record_bytes(r) for r in reply.content.array_records.values())
            good.append(reply)
        if not good:
            raise RuntimeError(f"no client answered the {what} query in round {record.round}")
        return good

    def allocation_masks(self, scores: Mapping[str, torch.Tensor], allocation: str | Mapping[str, float]) -> TierMasks:
        """One mask set at the target: per-layer sparsities of ``allocation``, each layer ranked by ``scores``."""
        space = self.plan.space
        by_layer = layer_sparsities(space, self.target, allocation, scores, None, self.plan.granularity)
        weights = {f"{n}.weight": scores[f"{n}.weight"] for n in space.names}
        return nested_masks(weights, [{f"{n}.weight": s for n, s in by_layer.items()}], self.plan.granularity)[0]


def top_k_mask(score: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` highest scores (ties broken by position)."""
    flat = score.reshape(-1).float()
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.topk(flat, min(k, flat.numel())).indices] = True
    return keep.reshape(score.shape)


def prune_and_grow(weight: torch.Tensor, mask: torch.Tensor, grow_score: torch.Tensor, count: int) -> torch.Tensor:
    """Drop the ``count`` kept weights of smallest magnitude and grow the ``count`` pruned ones of largest
    ``grow_score`` (RigL's rule): the number kept does not change."""
    keep = mask.reshape(-1).bool().clone()
    kept, pruned = keep.nonzero().squeeze(1), (~keep).nonzero().squeeze(1)
    count = min(count, kept.numel(), pruned.numel())
    if count <= 0:
        return keep.reshape(mask.shape)
    drop = kept[torch.topk(weight.reshape(-1).abs()[kept].float(), count, largest=False).indices]
    grow = pruned[torch.topk(grow_score.reshape(-1)[pruned].float(), count).indices]
    keep[drop] = False
    keep[grow] = True
    return keep.reshape(mask.shape)


def global_keep(scores: Mapping[str, torch.Tensor], total: int, floor: Mapping[str, int]) -> TierMasks:
    """Keep ``total`` weights across tensors by score, each tensor at least its ``floor`` count."""
    masks = {n: top_k_mask(s, floor.get(n, 0)) for n, s in scores.items()}
    rest = total - sum(int(m.sum()) for m in masks.values())
    if rest > 0:
        flat = torch.cat(
            [torch.where(masks[n].reshape(-1), -math.inf, s.reshape(-1).float()) for n, s in scores.items()]
        )
        chosen = torch.zeros(flat.numel(), dtype=torch.bool)
        chosen[torch.topk(flat, rest).indices] = True
        start = 0
        for n, s in scores.items():
            masks[n] = masks[n] | chosen[start : start + s.numel()].reshape(s.shape)
            start += s.numel()
    return masks


def adjust_fraction(server_round: int, first: int, last: int, start: float = 0.3) -> float:
    """The fraction of a layer's kept weights a re-adjustment swaps: ``start`` decaying to 0 by ``last`` (cosine)."""
    if server_round < first or server_round > last:
        return 0.0
    progress = (server_round - first) / max(last - first, 1)
    return start * 0.5 * (1.0 + math.cos(math.pi * progress))
