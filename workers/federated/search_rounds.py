"""What a federated search's server sends its clients and what it makes of their replies.

Three exchanges, each one Flower message per sampled node and one reply back:
- ``pooled_statistics``: ``query.stats`` with the dense model; clients answer with sums (X as sums of
  squares per input channel, G and F as batch sums) and counts, pooled as the federated jobs pool them.
- ``sparse_fedavg``: ``train`` rounds of FedAvg under the candidate's masks (kept values + bitmasks down,
  kept values up), averaged per weight over the clients that keep it.
- ``federated_scores``: ``evaluate`` with the candidate's masked model; clients answer with their accuracy,
  mean loss and example count per split, and the candidate's score is the example-weighted mean.

A client that fails costs its reply only; an exchange that gets no good reply at all fails the candidate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from logging import WARNING
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from prunehive.workers.apply import masked
from prunehive.workers.contracts import SplitMetrics
from prunehive.workers.federated.aggregation import collect_updates, masked_average
from prunehive.workers.federated.encoding import dense_record, encode
from prunehive.workers.federated.statistics import STATS_ACTION, PooledStats
from prunehive.workers.federated.strategy import error_summary
from prunehive.workers.tasks.base import Split

Config = Mapping[str, Any]  # the clients' configuration (ConfigRecord values)


def exchange(grid: Grid, nodes: Sequence[int], content: RecordDict, kind: str, what: str) -> list[Message]:
    """Send ``content`` to every node and return the good replies; failures are logged, and none good is an error."""
    messages = [Message(content, dst_node_id=n, message_type=kind) for n in nodes]
    good, errors = [], []
    for reply in grid.send_and_receive(messages):
        if reply.has_error():
            errors.append(error_summary(str(reply.error.reason)))
            log(WARNING, "client on node %s failed (%s): %s", reply.metadata.src_node_id, what, errors[-1])
        else:
            good.append(reply)
    if not good:
        detail = f": {errors[0]}" if errors else ""
        raise RuntimeError(f"no client answered the {what} request ({len(nodes)} asked){detail}")
    return good


def pooled_statistics(
    grid: Grid,
    nodes: Sequence[int],
    state: Mapping[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
    asked: Iterable[str],
    config: Config,
    calibration_batches: int,
    reference_rows: int,
) -> PooledStats:
    """Every node's calibration statistics of the dense model on its own rows, pooled (sums and counts)."""
    cfg = ConfigRecord({**config, "asked": sorted(asked), "calibration-batches": calibration_batches})
    content = RecordDict({"arrays": dense_record(state), "config": cfg})
    pooled = PooledStats(weights, None, reference_rows)
    for reply in exchange(grid, nodes, content, f"{MessageType.QUERY}.{STATS_ACTION}", "statistics"):
        pooled.add(reply)
    return pooled


def sparse_fedavg(
    grid: Grid,
    rounds: Sequence[Sequence[int]],
    state: dict[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    config: Config,
) -> dict[str, torch.Tensor]:
    """``state`` after one round of masked FedAvg per entry of ``rounds`` (the nodes that train in it)."""
    for number, nodes in enumerate(rounds, start=1):
        cfg = ConfigRecord({**config, "server-round": number})
        content = RecordDict({"arrays": encode(state, masks, send_masks=True), "config": cfg})
        replies = exchange(grid, nodes, content, MessageType.TRAIN, "recovery training")
        updates, _ = collect_updates(replies, {int(r.metadata.src_node_id): masks for r in replies}, state)
        state = masked(masked_average(updates, state), masks)
    return state


def federated_scores(
    grid: Grid,
    nodes: Sequence[int],
    state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    splits: Sequence[Split],
    config: Config,
) -> dict[str, SplitMetrics]:
    """Each split's accuracy and loss: the means over the nodes' replies, weighted by their example counts."""
    cfg = ConfigRecord({**config, "splits": list(splits)})
    arrays: ArrayRecord = encode(state, masks, send_masks=True)
    replies = exchange(grid, nodes, RecordDict({"arrays": arrays, "config": cfg}), MessageType.EVALUATE, "evaluation")
    out = {}
    for split in splits:
        records = [r.content.metric_records[split] for r in replies]
        counts = [_scalar(m, "num-examples") for m in records]
        total = sum(counts)
        accuracy = sum(n * _scalar(m, "accuracy") for n, m in zip(counts, records, strict=True)) / total
        loss = sum(n * _scalar(m, "loss") for n, m in zip(counts, records, strict=True)) / total
        out[split] = SplitMetrics("accuracy", accuracy, loss, accuracy, count=int(total))
    return out


def _scalar(record: MetricRecord, key: str) -> float:
    value = record[key]
    if not isinstance(value, (int, float)):
        raise TypeError(f"a client's {key!r} should be a number, got {value!r}")
    return float(value)
