"""The Flower ClientApp: each simulated client prunes and trains its own copy on its own data.

A client receives the model as kept values plus bitmasks, trains only the kept weights (the
mask is re-applied after every optimizer step) and sends back only the kept values: the server
knows which mask it sent. With the Wanda metric it also sends its activation norms, one float
per input channel, so the server can rank weights by |W| times the clients' own statistics.

Ray actors live long: tasks and partitions are cached per process, not rebuilt per message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn
from torch.func import functional_call

from prunehive.workers.federated.aggregation import STATS_KEY, SUBMASKS_KEY
from prunehive.workers.federated.encoding import as_array, decode, decode_masks, encode
from prunehive.workers.federated.partition import partition_indices
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.base import Task

app = ClientApp()


@lru_cache(maxsize=4)
def cached_task(name: str, seed: int) -> Task:
    return load_task(name, seed=seed)


@lru_cache(maxsize=4)
def cached_partitions(
    name: str, seed: int, kind: str, value: float, clients: int, partition_seed: int
) -> list[npt.NDArray[np.int64]]:
    labels = cached_task(name, seed).split("train")[1].numpy()
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
    x, y = task.split("train")
    idx = torch.from_numpy(parts[partition_id])
    return task, x[idx], y[idx]


def train_masked(
    task: Task,
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
    submasks: Sequence[Mapping[str, torch.Tensor]] = (),
) -> float:
    """Adam over the local data; pruned weights are zeroed again after every step. Returns the mean loss.

    ``submasks`` are the sparser tiers' nested masks: each batch also trains those sub-networks on
    their own (the loss is summed), so every tier's model works standalone after aggregation, as in
    slimmable networks and FjORD's ordered dropout.
    """
    x, y = data
    params = dict(model.named_parameters())
    pairs = [(params[n], m.to(params[n].dtype)) for n, m in masks.items()]
    subs = [{n: m.to(params[n].dtype) for n, m in sub.items()} for sub in submasks]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    total, steps = 0.0, 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = task.loss_fn(model(x[idx]), y[idx])
            for sub in subs:
                masked = {n: params[n] * m for n, m in sub.items()}
                loss = loss + task.loss_fn(functional_call(model, masked, (x[idx],)), y[idx])
            loss.backward()
            opt.step()
            with torch.no_grad():
                for p, m in pairs:
                    p.mul_(m)
            total += float(loss) / (1 + len(subs))
            steps += 1
    model.eval()
    return total / max(steps, 1)


def input_norms(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-input-channel L2 norm of each named layer's input over ``x`` (Wanda's X), by weight name."""
    modules = dict(model.named_modules())
    sq: dict[str, torch.Tensor] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            inp = args[0].detach()
            s = (
                inp.pow(2).sum(dim=(0, 2, 3))
                if isinstance(module, nn.Conv2d)
                else inp.reshape(-1, inp.shape[-1]).pow(2).sum(0)
            )
            sq[name] = sq[name] + s if name in sq else s

        return record

    handles = [modules[n.removesuffix(".weight")].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: v.sqrt().float() for n, v in sq.items()}


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition (and so which tier) this node is."""
    pid = int(context.node_config["partition-id"])
    return Message(RecordDict({"metrics": MetricRecord({"partition-id": pid})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    torch.set_num_threads(1)  # many clients share few cores; more threads only fight
    cfg = msg.content.config_records["config"]
    pid = int(context.node_config["partition-id"])
    task, x, y = local_data(cfg, pid)
    model = task.architecture()
    state, masks = decode(msg.content.array_records["arrays"], model.state_dict())
    model.load_state_dict(state)
    round_ = int(_num(cfg, "server-round"))
    gen = torch.Generator().manual_seed(int(_num(cfg, "seed")) * 1_000_003 + round_ * 1_009 + pid)
    epochs, batch = int(_num(cfg, "local-epochs")), int(_num(cfg, "batch-size"))
    template = model.state_dict()
    subs = (
        decode_masks(msg.content.array_records[SUBMASKS_KEY], template)
        if SUBMASKS_KEY in msg.content.array_records
        else []
    )
    loss = train_masked(task, model, (x, y), masks, epochs, batch, _num(cfg, "lr") or task.lr, gen, subs)
    accuracy = task.evaluate(model, "test").quality
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        "arrays": encode(model.state_dict(), masks, send_masks=False),
        "metrics": MetricRecord({"num-examples": len(x), "train-loss": loss, "accuracy": accuracy}),
    }
    if bool(cfg["stats"]):
        prunable = cfg["prunable"]
        names = [str(n) for n in prunable] if isinstance(prunable, list) else []
        norms = input_norms(model, names, x)
        records[STATS_KEY] = ArrayRecord({n: as_array(v.numpy()) for n, v in norms.items()})
    return Message(RecordDict(records), reply_to=msg)
