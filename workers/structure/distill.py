"""Healing a structured candidate: a short fine-tune of its model against the dense model's next-token
distributions (``distill: kl``, KL(dense ‖ candidate) per position) or the task's own loss (``none``), on
the calibration batches the units were ranked on.

The candidate is trained as a copy of the full-shaped model carrying the plan (removed rows and columns
zeroed, removed sublayers and blocks hooked out, as ``apply.py`` does), so the dense model the KL reads
stays untouched. After every optimiser step the removed entries are zeroed again, so the healed model is
still the candidate's smaller model: it has the same parameters, FLOPs and latency as before.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from prunehive.workers.apply import reapplier
from prunehive.workers.contracts import EvalResult
from prunehive.workers.kl import score_splits
from prunehive.workers.structure.apply import plan_hooks
from prunehive.workers.structure.engine import StructuredEngine
from prunehive.workers.structure.plan import StructurePlan
from prunehive.workers.structure.units import DecoderStructure
from prunehive.workers.tasks.base import Batch, Split, Task, logits_of

Distill = Literal["kl", "none"]
LR_SHARE = 0.1  # default learning rate: a tenth of the task's, as the unstructured recovery fine-tune uses


@dataclass(frozen=True)
class Healed:
    """A healed candidate's model (the plan's hooks attached) and the learning rate it was trained at."""

    model: nn.Module
    lr: float


def kl_loss(dense: nn.Module) -> Callable[[nn.Module, Batch], torch.Tensor]:
    """The training loss ``Task.train`` takes: mean over positions of KL(dense ‖ model) on the batch's inputs."""

    def loss(model: nn.Module, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            target = torch.log_softmax(logits_of(dense(batch[0])).float(), dim=-1)
        student = torch.log_softmax(logits_of(model(batch[0])).float(), dim=-1)
        vocab = student.shape[-1]
        return F.kl_div(student.reshape(-1, vocab), target.reshape(-1, vocab), log_target=True, reduction="batchmean")

    return loss


def calibration_rows(batches: list[Batch]) -> Batch:
    """The calibration batches as one set of rows, for ``Task.train`` to sample from."""
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def heal(  # noqa: PLR0913 - the plan, its weights and the recipe
    task: Task,
    dense: nn.Module,
    structure: DecoderStructure,
    plan: StructurePlan,
    weights: Mapping[str, torch.Tensor],
    calibration: list[Batch],
    steps: int,
    lr: float | None = None,
    distill: Distill = "kl",
) -> Healed:
    """A copy of ``dense`` computing as ``plan`` (``weights`` from the engine's ``weights``), fine-tuned
    ``steps`` steps on ``calibration``; ``dense`` itself is left as it was."""
    model = copy.deepcopy(dense)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].data = tensor.detach().clone().to(params[name].device)
    zero = reapplier(model, {name: tensor != 0 for name, tensor in weights.items()})
    plan_hooks(model, structure, plan)  # kept for the copy's lifetime: removed sublayers stay removed
    rate = float(lr if lr is not None else task.lr * LR_SHARE)
    if steps > 0:
        dense.eval()
        loss = kl_loss(dense) if distill == "kl" else None
        task.train(model, steps, lr=rate, after_step=zero, data=calibration_rows(calibration), loss=loss)
    zero()
    return Healed(model.eval(), rate)


def healed_candidate(
    engine: StructuredEngine, vector: list[float], steps: int, lr: float | None = None, distill: Distill = "kl"
) -> tuple[StructurePlan, Healed]:
    """A ``StructuredEngine`` candidate's plan and its healed model (the engine's weights and calibration)."""
    plan = engine.plan_of(vector)
    weights, calibration = engine.weights(plan), engine.pruner.calibration
    return plan, heal(engine.task, engine.model, engine.structure, plan, weights, calibration, steps, lr, distill)


def healed_result(  # noqa: PLR0913 - a candidate and the recipe
    engine: StructuredEngine,
    vector: list[float],
    steps: int,
    lr: float | None = None,
    distill: Distill = "kl",
    splits: tuple[Split, ...] = ("validation", "test"),
    limit: int | None = None,
) -> tuple[EvalResult, float]:
    """A ``StructuredEngine`` candidate healed and scored on ``splits`` (``limit``: the first tokens or
    samples only, as a staged search asks; with the validation KL from dense where the engine holds a
    reference), and the learning rate used."""
    start = time.perf_counter()
    plan, healed = healed_candidate(engine, vector, steps, lr, distill)
    metrics = score_splits(engine.task, healed.model, splits, limit, engine.reference)
    achieved, _, params, flops = engine.pruner.measure(plan)
    layers = {s.name: float(v) for s, v in zip(engine.slots, vector, strict=True)}
    return EvalResult(metrics, achieved, layers, params, flops, time.perf_counter() - start), healed.lr
