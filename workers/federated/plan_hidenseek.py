"""``hidenseek``: data-agnostic pruning at initialisation plus a sign supermask (HideNseek, 2022).

What the paper does: the server prunes the random initial model once with SynFlow (no data: the
"synaptic flow" of an all-ones input through absolute weights, iterated so no layer collapses). Kept
weights are never trained: clients learn a sign supermask ``w = w_init * m``, ``m`` in {-1, +1} (real
scores, straight-through sign), and send the signs, one bit per kept weight; the server votes.

What this implementation changes:
- SynFlow runs on the server's own probe input (all ones, the task's input shape) for 20 iterations
  on an exponential schedule, in float64, with the model in eval mode (fresh BatchNorm statistics are
  the identity), and keeps exactly ``pruning.sparsity`` of the prunable weights. SNIP is not offered.
- Clients rebuild ``w_init`` from the run's seed (the server's initial model is seeded), so weights
  never travel: downlink is the mask (one bit per prunable weight), the global signs (one bit per kept
  weight) and the small unprunable tensors (biases, BatchNorm), which clients train normally.
- The kept initial weights are scaled to their layer's dense norm (``kept_scale``), so a sparse
  layer's output keeps its dense variance; signs alone cannot restore a magnitude lost to pruning.
- A client starts its scores at ``sign * FLIP_FRACTION * lr * steps`` (``steps``: a typical client's local
  steps), trains them with AdamW and sends ``sign(score)`` as bits. AdamW moves a score about ``lr`` a step,
  so a sign flips only where half a round pushed it one way (from ``sign * 0.01`` a third flip as noise).
- The server's vote, weighted by examples, flips a sign only on a two-thirds majority (``vote``).
  Unprunable tensors are averaged as in FedAvg.
- Only unstructured pruning (a sign supermask is per weight); other granularities are refused.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from torch import nn
from torch.func import functional_call

from prunehive.workers.federated.client_app import _num, app, cached_rows, cached_task, local_data
from prunehive.workers.federated.client_cost import plain_loss, training_cost
from prunehive.workers.federated.encoding import as_array, dense_record, get_mask, put_mask, record_bytes
from prunehive.workers.federated.models import start_model
from prunehive.workers.federated.plan_common import NamedPlanStrategy, top_k_mask
from prunehive.workers.federated.plans import TierMasks
from prunehive.workers.federated.strategy import RoundRecord
from prunehive.workers.tasks.base import seed_everything

ACTION = "hidenseek"
SIGNS = "@signs"
SYNFLOW_ITERATIONS = 20
FLIP_FRACTION = 0.5  # of a typical client's local steps that must push a score one way to flip its sign
FLIP_MAJORITY = 1 / 3  # net vote against a sign, as a share of the examples, that flips it (over 2/3 against)


def kept_scale(weight: torch.Tensor, mask: torch.Tensor) -> float:
    """``|w| / |w * mask|``: the kept initial weights are scaled up so each layer keeps its dense norm,
    hence its output's variance. A sign supermask cannot grow magnitudes, so without this a layer with
    no BatchNorm after it (the classifier) gives logits too small to learn from at high sparsity."""
    kept = float((weight * mask).norm())
    return float(weight.norm()) / kept if kept > 0 else 1.0


def synflow_masks(model: nn.Module, names: list[str], example: torch.Tensor, sparsity: float) -> TierMasks:
    """SynFlow masks of the named weights, keeping exactly ``1 - sparsity`` of them in all."""
    probe = copy.deepcopy(model).double().eval()
    params = dict(probe.named_parameters())
    with torch.no_grad():
        for p in params.values():
            p.abs_()
    original = {n: params[n].detach().clone() for n in names}
    masks = {n: torch.ones_like(original[n], dtype=torch.bool) for n in names}
    total = sum(m.numel() for m in masks.values())
    ones = torch.ones_like(example, dtype=torch.float64)
    for k in range(1, SYNFLOW_ITERATIONS + 1):
        with torch.no_grad():
            for n in names:
                params[n].copy_(original[n] * masks[n])
        probe.zero_grad(set_to_none=True)
        probe(ones).sum().backward()
        scores = {n: (params[n].grad * params[n]).detach().abs() for n in names}  # type: ignore[operator]
        keep = round(total * (1.0 - sparsity) ** (k / SYNFLOW_ITERATIONS))
        flat = torch.cat([torch.where(masks[n], scores[n], -1.0).reshape(-1) for n in names])
        chosen = top_k_mask(flat, keep)
        start = 0
        for n in names:
            masks[n] = chosen[start : start + masks[n].numel()].reshape(masks[n].shape)
            start += masks[n].numel()
    return masks


def pack_signs(signs: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """The signs of the kept weights, one bit each (1 for +1)."""
    return np.packbits((signs.reshape(-1)[mask.reshape(-1)] > 0).numpy())


def unpack_signs(bits: np.ndarray, mask: torch.Tensor) -> torch.Tensor:
    """Signs in {-1, +1} shaped like ``mask`` (+1 where pruned)."""
    kept = int(mask.sum())
    values = torch.from_numpy(np.unpackbits(bits, count=kept).astype(np.float32)) * 2.0 - 1.0
    out = torch.ones(mask.numel())
    out[mask.reshape(-1)] = values
    return out.reshape(mask.shape)


def supermask_record(
    state: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    signs: Mapping[str, torch.Tensor],
    with_masks: bool,
) -> ArrayRecord:
    """Unprunable tensors dense; each prunable weight as its packed signs (and, downlink, its bitmask)."""
    record = dense_record({n: t for n, t in state.items() if n not in masks})
    for name, mask in masks.items():
        record[name + SIGNS] = as_array(pack_signs(signs[name], mask))
        if with_masks:
            put_mask(record, name, "", mask)
    return record


def vote(signs: torch.Tensor, votes: torch.Tensor, total: float) -> torch.Tensor:
    """The new global signs: a sign flips only when more than ``(1 + FLIP_MAJORITY) / 2`` of the examples
    (``votes`` is the example-weighted sum of the clients' signs, ``total`` the examples) voted against it.
    A plain majority lets each round flip a large, mostly non-IID-driven share of signs at once."""
    flip = votes * signs < -FLIP_MAJORITY * total
    return torch.where(flip, -signs, signs)


class SignSupermask(nn.Module):
    """``base`` whose prunable weights are ``w_init * sign(score)`` over the kept positions (straight-through)."""

    def __init__(
        self,
        base: nn.Module,
        masks: Mapping[str, torch.Tensor],
        signs: Mapping[str, torch.Tensor],
        score_init: float = 0.01,
    ) -> None:
        super().__init__()
        self.base = base
        self.names = list(masks)
        self.scores = nn.ParameterList()
        for i, name in enumerate(self.names):
            weight = base.get_parameter(name)
            weight.requires_grad_(False)
            index = masks[name].reshape(-1).nonzero().squeeze(1)
            self.register_buffer(f"index{i}", index)
            self.scores.append(nn.Parameter(signs[name].reshape(-1)[index] * score_init))

    def weights(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, name in enumerate(self.names):
            weight, index, score = self.base.get_parameter(name), self.get_buffer(f"index{i}"), self.scores[i]
            sign = torch.where(score >= 0, 1.0, -1.0)
            values = weight.reshape(-1)[index] * (score + (sign - score).detach())
            flat = torch.zeros(weight.numel(), dtype=weight.dtype)
            out[name] = flat.index_put((index,), values).reshape(weight.shape)
        return out

    def forward(self, x: torch.Tensor) -> Any:
        return functional_call(self.base, self.weights(), (x,))

    def signs(self) -> dict[str, torch.Tensor]:
        out = {}
        for i, name in enumerate(self.names):
            full = torch.ones(self.base.get_parameter(name).numel())
            full[self.get_buffer(f"index{i}")] = torch.where(self.scores[i].detach() >= 0, 1.0, -1.0)
            out[name] = full.reshape(self.base.get_parameter(name).shape)
        return out


class HideNseekStrategy(NamedPlanStrategy):
    train_action = ACTION

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.plan.granularity.kind != "layer":
            label = self.plan.granularity.label
            raise ValueError(f"pruning.granularity: hidenseek learns a sign per weight; use unstructured, not {label}")
        model = start_model(self.task)
        model.load_state_dict(self.state)
        masks = synflow_masks(model, self.prunable, self.task.example_input(), self.target)
        self.set_masks(masks)
        self.initial = {n: self.state[n] * masks[n] * kept_scale(self.state[n], masks[n]) for n in self.prunable}
        self.signs = {n: torch.ones_like(self.state[n]) for n in self.prunable}
        self.state.update(self.initial)

    def train_payload(self, cfg: ConfigRecord) -> RecordDict:
        masks = self.tier_masks(0) or {}
        return RecordDict({"arrays": supermask_record(self.state, masks, self.signs, with_masks=True), "config": cfg})

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        record = self.current or RoundRecord(server_round, self.sparsities())
        good = [m for m in replies if not m.has_error()]
        for msg in replies:
            if msg.has_error():
                self._failed(msg, record, "training")
        record.failures += max(0, record.sampled - len(replies))
        record.replies = len(good)
        record.dense_bytes_up = self.dense_bytes * len(good)
        if not good:
            return dense_record(self.state), None
        masks = self.tier_masks(0) or {}
        votes = {n: torch.zeros_like(self.state[n], dtype=torch.float64) for n in masks}
        sums = {n: torch.zeros_like(t, dtype=torch.float64) for n, t in self.state.items() if n not in masks}
        metrics = []
        for msg in good:
            arrays = msg.content.array_records["arrays"]
            record.bytes_up += record_bytes(arrays)
            m = {k: float(v) for k, v in msg.content.metric_records["metrics"].items()}  # type: ignore[arg-type]  # wire boundary
            weight = m.get("num-examples", 1.0)
            metrics.append((weight, m))
            for n, mask in masks.items():
                votes[n] += weight * unpack_signs(arrays[n + SIGNS].numpy(), mask).double()
            for n in sums:
                sums[n] += weight * torch.from_numpy(arrays[n].numpy().copy()).reshape(self.state[n].shape).double()
        total = sum(w for w, _ in metrics)
        for n in masks:
            self.signs[n] = vote(self.signs[n], votes[n], total)
            self.state[n] = self.initial[n] * self.signs[n]
        for n, s in sums.items():
            self.state[n] = (s / total).to(self.state[n].dtype)
        record.client_accuracy = sum(w * m.get("accuracy", 0.0) for w, m in metrics) / total
        record.train_loss = sum(w * m.get("train-loss", 0.0) for w, m in metrics) / total
        record.client_flops += sum(m.get("train-flops", 0.0) for _, m in metrics)
        record.peak_client_bytes = max([record.peak_client_bytes, *(int(m.get("peak-bytes", 0)) for _, m in metrics)])
        return dense_record(self.state), MetricRecord(
            {"accuracy": record.client_accuracy, "train-loss": record.train_loss}
        )

    def update_masks(self, server_round: int, grid: Grid, nodes: list[int], record: RoundRecord) -> None:
        """The SynFlow masks are fixed at initialisation."""


@lru_cache(maxsize=4)
def initial_state(task: str, task_seed: int, seed: int) -> dict[str, torch.Tensor]:
    """The run's initial model, rebuilt from its seed exactly as the server built it."""
    loaded = cached_task(task, task_seed)
    seed_everything(seed)
    return {n: t.detach().clone() for n, t in start_model(loaded).state_dict().items()}


def typical_steps(cfg: ConfigRecord) -> int:
    """Local steps of a client holding an equal share of the train split: every client flips a sign
    only after about ``FLIP_FRACTION`` of these steps pushed its score one way (Adam moves a score by
    about ``lr`` a step whatever the gradient's size), whatever its own share."""
    rows = len(cached_rows(str(cfg["task"]), int(_num(cfg, "task-seed")))[0]) / _num(cfg, "partitions")
    return int(_num(cfg, "local-epochs")) * math.ceil(rows / _num(cfg, "batch-size"))


@app.train(ACTION)
def hidenseek_train(msg: Message, context: Context) -> Message:
    """Train a sign supermask over the kept initial weights; reply with the signs, one bit per kept weight."""
    torch.set_num_threads(1)
    cfg = msg.content.config_records["config"]
    pid = int(context.node_config["partition-id"])
    task, x, y = local_data(cfg, pid)
    initial = initial_state(str(cfg["task"]), int(_num(cfg, "task-seed")), int(_num(cfg, "seed")))
    record = msg.content.array_records["arrays"]
    state = dict(initial)
    masks, signs = {}, {}
    for name, like in initial.items():
        if name in record:
            state[name] = torch.from_numpy(record[name].numpy().copy()).reshape(like.shape)
            continue
        mask = get_mask(record, name, "", like)
        if mask is None:
            raise KeyError(f"hidenseek message has neither {name!r} nor its mask")
        masks[name], signs[name] = mask, unpack_signs(record[name + SIGNS].numpy(), mask)
        state[name] = like * mask * kept_scale(like, mask)  # the server's ``initial``, rebuilt
    base = start_model(task)
    base.load_state_dict(state)
    batch = int(_num(cfg, "batch-size"))
    steps = int(_num(cfg, "local-epochs")) * math.ceil(len(x) / batch)
    lr = _num(cfg, "lr") or task.lr
    net = SignSupermask(base, masks, signs, score_init=FLIP_FRACTION * lr * typical_steps(cfg))
    cost = training_cost(
        net, plain_loss(task.loss_fn), (x[:batch], y[:batch]), {f"base.{n}": m for n, m in masks.items()}, steps
    )
    mean_loss = task.train(
        net,
        steps,
        lr=lr,
        seed=int(_num(cfg, "seed")) * 1_000_003 + int(_num(cfg, "server-round")) * 1_009 + pid,
        data=(x, y),
        batch_size=batch,
        cosine=False,
    )
    metrics = {"num-examples": len(x), "train-loss": mean_loss, "accuracy": task.evaluate(net, "test").quality}
    records: dict[str, ArrayRecord | MetricRecord | ConfigRecord] = {
        "arrays": supermask_record(base.state_dict(), masks, net.signs(), with_masks=False),
        "metrics": MetricRecord({**metrics, **cost.metrics()}),
    }
    return Message(RecordDict(records), reply_to=msg)


STRATEGY = HideNseekStrategy
