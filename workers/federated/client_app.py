"""The Flower ClientApp: each simulated client prunes and trains its own copy on its own data.

A client receives the model as kept values plus bitmasks, trains only the kept weights with the
task's own ``Task.train`` on its own rows (the masks are re-applied after every optimizer step) and
sends back only the kept values: the server knows which mask it sent. Asked for calibration
statistics (a ``query.stats`` message), it runs the workers' ``collect_stats`` on its own rows.

Ray actors live long: tasks and partitions are cached per process, not rebuilt per message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn
from torch.func import functional_call

from prunehive.workers.apply import masked, reapplier
from prunehive.workers.calibration import collect_stats
from prunehive.workers.federated.aggregation import SUBMASKS_KEY
from prunehive.workers.federated.client_cost import plain_loss, training_cost
from prunehive.workers.federated.encoding import decode, decode_masks, encode
from prunehive.workers.federated.models import start_model, train_rows
from prunehive.workers.federated.partition import partition_indices
from prunehive.workers.federated.statistics import STATS_ACTION, stats_reply
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.base import Batch, Task

app = ClientApp()


@lru_cache(maxsize=4)
def cached_task(name: str, seed: int) -> Task:
    return load_task(name, seed=seed)


@lru_cache(maxsize=4)
def cached_rows(name: str, seed: int) -> Batch:
    """The task's train split as tensors, read once per client process (a streamed task's batches joined)."""
    return train_rows(cached_task(name, seed))


@lru_cache(maxsize=4)
def cached_partitions(
    name: str, seed: int, kind: str, value: float, clients: int, partition_seed: int
) -> list[npt.NDArray[np.int64]]:
    labels = cached_rows(name, seed)[1].numpy()
    return partition_indices(labels, kind, value, clients, partition_seed)


def _num(cfg: ConfigRecord, key: str) -> float:
    value = cfg[key]
    if not isinstance(value, (int, float)):
        raise TypeError(f"config {key!r} should be a number, got {value!r}")
    return float(value)


def local_data(cfg: ConfigRecord, partition_id: int) -> tuple[Task, torch.Tensor, torch.Tensor]:
    """This client's task and its share of the training split."""
    task = cached_task(str(cfg["task"]), int(_num(cfg, "task-seed")))
    parts = cached_partitions(
        str(cfg["task"]),
        int(_num(cfg, "task-seed")),
        str(cfg["partition-kind"]),
        _num(cfg, "partition-value"),
        int(_num(cfg, "partitions")),
        int(_num(cfg, "partition-seed")),
    )
    x, y = cached_rows(str(cfg["task"]), int(_num(cfg, "task-seed")))
    idx = torch.from_numpy(parts[partition_id])
    return task, x[idx], y[idx]


def received_model(msg: Message, task: Task) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """The task's model holding the values the server sent, and the masks it came under."""
    model = start_model(task)
    state, masks = decode(msg.content.array_records["arrays"], model.state_dict())
    model.load_state_dict(state)
    return model, masks


def nested_loss(
    task: Task, submasks: Sequence[Mapping[str, torch.Tensor]]
) -> Callable[[nn.Module, Batch], torch.Tensor] | None:
    """The loss of the model plus that of each sparser tier's sub-network on the same batch (None: no tiers).

    Training the nested sub-networks too keeps every tier's model working standalone after
    aggregation, as in slimmable networks and FjORD's ordered dropout.
    """
    if not submasks:
        return None

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        x, y = batch
        params = dict(model.named_parameters())
        value = task.loss_fn(model(x), y)
        for sub in submasks:
            value = value + task.loss_fn(functional_call(model, masked(params, sub), (x,)), y)
        return value

    return loss


def reapply(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> Callable[[], None] | None:
    """Zero the pruned weights again (``Task.train``'s ``after_step``, ``workers/apply.py``'s rule); None
    when nothing is masked."""
    return reapplier(model, masks) if masks else None


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition (and so which tier) this node is."""
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)


@app.query(STATS_ACTION)
def stats(msg: Message, context: Context) -> Message:
    """Calibration statistics of the received model on this client's own rows, only those asked for."""
    torch.set_num_threads(1)
    cfg = msg.content.config_records["config"]
    task, x, y = local_data(cfg, int(context.node_config["partition-id"]))
    model, masks = received_model(msg, task)
    names = [str(n).removesuffix(".weight") for n in cfg["prunable"]]  # type: ignore[union-attr]
    asked = [str(a) for a in cfg["asked"]]  # type: ignore[union-attr]
    batches = task.calibration_batches(int(_num(cfg, "calibration-batches")), data=(x, y))
    layer_stats = collect_stats(task, model, names, with_grads=bool({"G", "F"} & set(asked)), data=batches)
    rows = sum(len(b[1]) for b in batches)
    return Message(RecordDict(stats_reply(layer_stats, masks, asked, rows, len(batches))), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)  # many clients share few cores; more threads only fight
    cfg = msg.content.config_records["config"]
    pid = int(context.node_config["partition-id"])
    task, x, y = local_data(cfg, pid)
    model, masks = received_model(msg, task)
    round_ = int(_num(cfg, "server-round"))
    epochs, batch = int(_num(cfg, "local-epochs")), int(_num(cfg, "batch-size"))
    subs = (
        decode_masks(msg.content.array_records[SUBMASKS_KEY], model.state_dict())
        if SUBMASKS_KEY in msg.content.array_records
        else []
    )
    steps = epochs * math.ceil(len(x) / batch)  # local epochs over this client's rows, as batches
    loss = nested_loss(task, subs)
    cost = training_cost(model, loss or plain_loss(task.loss_fn), (x[:batch], y[:batch]), masks, steps)
    mean_loss = task.train(
        model,
        steps,
        lr=_num(cfg, "lr") or None,
        after_step=reapply(model, masks),
        seed=int(_num(cfg, "seed")) * 1_000_003 + round_ * 1_009 + pid,
        data=(x, y),
        batch_size=batch,
        loss=loss,
        cosine=False,
    )
    accuracy = task.evaluate(model, "test").quality
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        "arrays": encode(model.state_dict(), masks, send_masks=False),
        "metrics": MetricRecord(
            {
                "num-examples": len(x),
                "train-loss": mean_loss / (1 + len(subs)),
                "accuracy": accuracy,
                **cost.metrics(),
            }
        ),
    }
    return Message(RecordDict(records), reply_to=msg)
