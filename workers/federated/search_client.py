"""The ClientApp a federated search talks to: statistics, sparse training and federated evaluation.

Its ``query.stats`` and ``train`` handlers are the federated jobs' own (``client_app.py``): calibration
statistics of the received model on the client's rows, and local epochs of training under the received
masks. ``evaluate`` is the search's: the received (masked) model scored on the client's own share of each
asked split, answered with the client's accuracy, mean loss and example count per split, nothing else.

Each client holds a share of every split, drawn by the job's partitioner with the job's seed: its train
rows (calibration, training) as the federated jobs draw them, and its share of validation and test
(evaluation), so all clients together hold each split exactly once.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from prunehive.workers.federated import client_app
from prunehive.workers.federated.client_app import _num, cached_task, received_model
from prunehive.workers.federated.partition import partition_indices
from prunehive.workers.federated.statistics import STATS_ACTION
from prunehive.workers.tasks.base import Batch, Split, Task, TaskError, logits_of

search_app = ClientApp()
search_app.query(STATS_ACTION)(client_app.stats)
search_app.train()(client_app.train)
EVAL_SPLITS: tuple[Split, ...] = ("validation", "test")


@lru_cache(maxsize=8)
def split_rows(name: str, seed: int, split: Split) -> Batch:
    """A split as tensors, read once per process (a streamed task's batches joined)."""
    task = cached_task(name, seed)
    if task.in_memory:
        return task.split(split)
    batches = list(task.batches(split))
    if not batches:
        raise TaskError(f"task {task.name!r}: the {split} split has no batches to share among clients")
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


@lru_cache(maxsize=8)
def split_partitions(
    name: str, seed: int, split: Split, kind: str, value: float, clients: int, partition_seed: int
) -> list[npt.NDArray[np.int64]]:
    """Every client's row indices of ``split`` (the same partitioner and seed as its train rows)."""
    labels = split_rows(name, seed, split)[1].numpy()
    try:
        return partition_indices(labels, kind, value, clients, partition_seed)
    except ValueError as exc:
        raise ValueError(f"{exc} (the {split} split, {len(labels)} rows)") from None


def local_split(cfg: ConfigRecord, partition: int, split: Split) -> Batch:
    """This client's share of ``split``."""
    name, seed = str(cfg["task"]), int(_num(cfg, "task-seed"))
    kind, value = str(cfg["partition-kind"]), _num(cfg, "partition-value")
    parts = split_partitions(
        name, seed, split, kind, value, int(_num(cfg, "partitions")), int(_num(cfg, "partition-seed"))
    )
    x, y = split_rows(name, seed, split)
    idx = torch.from_numpy(parts[partition])
    return x[idx], y[idx]


def scored(task: Task, model: nn.Module, rows: Batch) -> tuple[float, float, int]:
    """Accuracy, mean loss and number of examples of ``model`` on ``rows``."""
    x, y = rows
    model.eval()
    correct, loss, count = 0, 0.0, 0
    size = task.eval_batch_size
    with torch.inference_mode():
        for start in range(0, len(x), size):
            xb, yb = x[start : start + size], y[start : start + size]
            out = model(xb)
            loss += float(task.loss_fn(out, yb)) * yb.numel()
            correct += int(logits_of(out).argmax(-1).eq(yb).sum())
            count += yb.numel()
    if count == 0:
        raise TaskError(f"task {task.name!r}: this client holds no evaluation rows")
    return correct / count, loss / count, count


@search_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """The received model's accuracy, mean loss and example count on this client's share of each split."""
    cfg = msg.content.config_records["config"]
    partition = int(context.node_config["partition-id"])
    task = cached_task(str(cfg["task"]), int(_num(cfg, "task-seed")))
    if task.quality != "accuracy":
        raise ValueError(f"federated evaluation scores classifiers; {task.name} reports {task.quality}")
    model, _ = received_model(msg, task)
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {}
    for name in cfg["splits"]:  # type: ignore[union-attr]
        split = next((s for s in EVAL_SPLITS if s == name), None)
        if split is None:
            raise ValueError(f"cannot evaluate on split {name!r}; clients hold {', '.join(EVAL_SPLITS)}")
        accuracy, loss, count = scored(task, model, local_split(cfg, partition, split))
        records[split] = MetricRecord({"num-examples": count, "accuracy": accuracy, "loss": loss})
    return Message(RecordDict(records), reply_to=msg)
