"""``PruningFedAvg``: Flower's FedAvg with per-tier masks, sparse messages and byte accounting.

Only ``configure_train`` and ``aggregate_train`` change. The first, when the plan changes the masks,
scores the global model with the workers' metrics (asking the round's clients for calibration
statistics first if the metric reads any: see ``statistics.py``) and derives each tier's masks; then
it sends each sampled client its tier's masked model (values + bitmasks). The second decodes the
replies under the masks that were sent, averages each weight over the clients that kept it and
counts failures. Every byte of both exchanges is counted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import WARNING

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore import log

from prunehive.workers.apply import masked
from prunehive.workers.calibration import LayerStats
from prunehive.workers.federated.aggregation import SUBMASKS_KEY, collect_updates, masked_average
from prunehive.workers.federated.encoding import Masks, dense_record, encode, encode_masks, record_bytes
from prunehive.workers.federated.plans import MaskPlan, TierMasks, masked_sparsity, with_bias_masks
from prunehive.workers.federated.statistics import STATS_ACTION, PooledStats, Scoring, score_layers, weight_stats


@dataclass
class RoundRecord:
    """What one round cost and achieved; the driver logs it to MLflow."""

    round: int
    sparsity: list[float]  # achieved, per tier
    sampled: int = 0
    replies: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    bytes_up: int = 0
    bytes_down: int = 0
    dense_bytes_up: int = 0
    dense_bytes_down: int = 0
    client_accuracy: float = float("nan")
    train_loss: float = float("nan")
    test_accuracy: list[float] = field(default_factory=list)  # per tier
    seconds: float = 0.0
    client_flops: float = 0.0  # local training FLOPs, summed over the round's clients (see client_cost)
    peak_client_bytes: int = 0  # the largest client's measured peak training memory


def error_summary(reason: str, limit: int = 300) -> str:
    """The last meaningful line of a Flower error reason (a Ray traceback wrapped in ``<class ...>:<'...'>``)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", reason).strip().removesuffix("'>")
    lines = [line.strip() for line in text.splitlines() if line.strip() and set(line.strip()) != {"^"}]
    return (lines[-1] if lines else text)[:limit]


def apply_masks(state: dict[str, torch.Tensor], masks: Masks | None) -> dict[str, torch.Tensor]:
    return masked(state, masks or {})


class PruningFedAvg(FedAvg):
    """FedAvg whose clients train masked copies; ``plan`` decides each tier's masks per round."""

    def __init__(
        self,
        plan: MaskPlan,
        initial: dict[str, torch.Tensor],
        client_config: dict[str, int | float | str | bool | list[str]],
        scoring: Scoring,
        evaluate: Callable[[dict[str, torch.Tensor]], float],
        on_round: Callable[[RoundRecord], None],
        fraction: float = 1.0,
        clients: int = 2,
        timeout: float = 600.0,
    ) -> None:
        super().__init__(fraction_train=fraction, fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=clients)
        self.plan = plan
        self.state = {n: t.detach().clone().float() for n, t in initial.items()}
        self.client_config = client_config
        self.scoring = scoring
        self.evaluate_model = evaluate
        self.on_round = on_round
        self.timeout = timeout
        self.prunable = [f"{n}.weight" for n in plan.space.names]
        self.total_prunable = sum(self.state[n].numel() for n in self.prunable)
        self.masks: list[TierMasks] | None = None
        # The latest scores (by weight name) and pooled statistics (by layer name); |W| until the first scoring.
        self.scores: dict[str, torch.Tensor] = {n: self.state[n].abs() for n in self.prunable}
        self.stats: dict[str, LayerStats] | None = None
        self.node_tier: dict[int, int] = {}
        self.sent: dict[int, Masks | None] = {}
        self.dense_bytes = record_bytes(dense_record(self.state))
        self.history: list[RoundRecord] = []
        self.current: RoundRecord | None = None
        self._started = 0.0

    # -- tiers ----------------------------------------------------------------------------------
    def assign_tiers(self, grid: Grid, timeout: float) -> None:
        """Ask every node its partition id once; tier = partition id modulo the number of tiers."""
        nodes = sorted(grid.get_node_ids())
        ask = [Message(RecordDict({}), dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
        by_node = {n: i for i, n in enumerate(nodes)}
        for reply in grid.send_and_receive(ask, timeout=timeout):
            if not reply.has_error():  # wire boundary: the partition id arrives in the reply's MetricRecord
                by_node[reply.metadata.src_node_id] = int(reply.content.metric_records["metrics"]["partition-id"])  # type: ignore[arg-type]
        self.node_tier = {n: pid % self.plan.tiers for n, pid in by_node.items()}

    def tier_masks(self, tier: int) -> TierMasks | None:
        return None if self.masks is None else self.masks[tier]

    def sparsities(self) -> list[float]:
        """Achieved sparsity of the prunable weights, per tier (biases under channel masks do not count)."""
        out = []
        for t in range(self.plan.tiers):
            masks = self.tier_masks(t) or {}
            out.append(masked_sparsity({n: masks[n] for n in self.prunable if n in masks}, self.total_prunable))
        return out

    # -- scoring --------------------------------------------------------------------------------
    def rescore(self, grid: Grid, nodes: list[int], record: RoundRecord) -> None:
        """Score the global weights by the metric, with the statistics pooled from ``nodes`` if it reads any."""
        weights = {n: self.state[n] for n in self.prunable}
        if not self.scoring.asked:
            self.stats = weight_stats(weights)
        else:
            masks = self.tier_masks(0)
            arrays = encode(self.state, masks, send_masks=True) if masks else dense_record(self.state)
            cfg = ConfigRecord(
                {
                    **self.client_config,
                    "asked": list(self.scoring.asked),
                    "calibration-batches": self.scoring.calibration_batches,
                }
            )
            content = RecordDict({"arrays": arrays, "config": cfg})
            kind = f"{MessageType.QUERY}.{STATS_ACTION}"
            asks = [Message(content, dst_node_id=n, message_type=kind) for n in nodes]
            record.bytes_down += len(asks) * record_bytes(arrays)
            pooled = PooledStats(weights, masks, self.scoring.reference_rows)
            replies = list(grid.send_and_receive(asks, timeout=self.timeout))
            record.failures += max(0, len(asks) - len(replies))
            for reply in replies:
                if reply.has_error():
                    self._failed(reply, record, "statistics")
                    continue
                record.bytes_up += sum(record_bytes(r) for r in reply.content.array_records.values())
                pooled.add(reply)
            self.stats = pooled.layer_stats()
        self.scores = score_layers(self.scoring.metric, self.stats, self.scoring.seed)

    def _failed(self, msg: Message, record: RoundRecord, what: str) -> None:
        reason = error_summary(str(msg.error.reason))
        record.failures += 1
        record.errors.append(reason)
        node = msg.metadata.src_node_id
        log(WARNING, "client on node %s failed (%s) in round %s: %s", node, what, record.round, reason)

    # -- training -------------------------------------------------------------------------------
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._started = time.perf_counter()
        sample = max(int(len(list(grid.get_node_ids())) * self.fraction_train), self.min_train_nodes)
        nodes, _ = sample_nodes(grid, self.min_available_nodes, sample)
        self.current = RoundRecord(server_round, [], sampled=len(nodes))
        if self.plan.changes_at(server_round):
            self.rescore(grid, nodes, self.current)
            masks = self.plan.masks(server_round, self.scores, self.stats)
            if masks is not None and self.plan.granularity.kind == "channel":
                masks = with_bias_masks(masks, set(self.state))
            self.masks = masks
            self.state = apply_masks(self.state, self.tier_masks(0))  # tier 0 holds every other tier
        self.current.sparsity = self.sparsities()
        cfg = ConfigRecord({**self.client_config, "server-round": server_round})
        payloads: dict[int, RecordDict] = {}
        messages = []
        self.sent = {}
        for node in nodes:
            tier = self.node_tier.get(node, 0)
            masks = self.tier_masks(tier)
            if tier not in payloads:
                payloads[tier] = self._payload(tier, cfg)
            self.current.bytes_down += sum(record_bytes(r) for r in payloads[tier].array_records.values())
            self.current.dense_bytes_down += self.dense_bytes
            self.sent[node] = masks
            messages.append(Message(payloads[tier], dst_node_id=node, message_type=MessageType.TRAIN))
        return messages

    def _payload(self, tier: int, cfg: ConfigRecord) -> RecordDict:
        """A tier's model (kept values + bitmasks) and, for nested tiers, the sparser tiers' masks."""
        masks = self.tier_masks(tier)
        records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
            "arrays": encode(apply_masks(self.state, masks), masks, send_masks=True),
            "config": cfg,
        }
        if self.masks is not None and tier + 1 < len(self.masks):
            records[SUBMASKS_KEY] = encode_masks(self.masks[tier + 1 :])
        return RecordDict(records)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        record = self.current or RoundRecord(server_round, self.sparsities())
        updates, failed = collect_updates(replies, self.sent, self.state)
        record.replies = len(updates)
        record.failures += max(0, record.sampled - len(replies))  # replies that never came
        for msg in failed:
            self._failed(msg, record, "training")
        for msg in replies:
            if not msg.has_error():
                record.bytes_up += record_bytes(msg.content.array_records["arrays"])
        record.dense_bytes_up = self.dense_bytes * len(updates)
        if not updates:
            return dense_record(self.state), None
        self.state = masked_average(updates, self.state)
        total = sum(u.weight for u in updates)
        record.client_accuracy = sum(u.weight * u.metrics.get("accuracy", 0.0) for u in updates) / total
        record.client_flops += sum(u.metrics.get("train-flops", 0.0) for u in updates)
        peaks = [int(u.metrics.get("peak-bytes", 0)) for u in updates]
        record.peak_client_bytes = max([record.peak_client_bytes, *peaks])
        record.train_loss = sum(u.weight * u.metrics.get("train-loss", 0.0) for u in updates) / total
        metrics = MetricRecord({"accuracy": record.client_accuracy, "train-loss": record.train_loss})
        return dense_record(self.state), metrics

    # -- server-side evaluation (Strategy.start's evaluate_fn) -----------------------------------
    def evaluate_global(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Test accuracy of each tier's model; round 0 is the initial model. Ends the round's record."""
        accuracies = [self.evaluate_model(apply_masks(self.state, self.tier_masks(t))) for t in range(self.plan.tiers)]
        if server_round > 0 and self.current is not None:
            self.current.test_accuracy = accuracies
            self.current.seconds = time.perf_counter() - self._started
            self.history.append(self.current)
            self.on_round(self.current)
            self.current = None
        return MetricRecord({f"test-accuracy-tier{t}": a for t, a in enumerate(accuracies)})
