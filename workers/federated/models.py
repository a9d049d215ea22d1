"""Which model a federated run starts from, and the training rows its clients partition, for any task form.

A task that brings a trained model (``load_model``: an ``hf:`` directory, a user's checkpoint) is
pruned and fine-tuned from it; a task that trains its own (the built-in demos: an ``architecture``
and a recipe) starts from fresh weights, as FedAvg from scratch. Clients partition the train split
by row, so a streamed task's train batches are gathered once per process into tensors.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from prunehive.workers.tasks.base import Batch, Task, TaskError


def brings_model(task: Task) -> bool:
    """Whether the task loads a trained model (rather than training ``architecture()`` by its own recipe)."""
    return not task.trains_own_model and type(task).load_model is not Task.load_model


def start_model(task: Task) -> nn.Module:
    """The server's model of round 1 (seed first for a repeatable fresh start), and on a client the model
    a received state is loaded into: a copy of the task's trained model (the task keeps its loaded one,
    so a client process reads the directory or checkpoint once), or its fresh architecture."""
    if brings_model(task):
        return copy.deepcopy(task.model())
    return task.architecture()


def train_rows(task: Task) -> Batch:
    """The whole train split as tensors: ``split("train")`` for in-memory tasks, else its batches joined."""
    if task.in_memory:
        return task.split("train")
    batches = list(task.batches("train"))
    if not batches:
        raise TaskError(f"task {task.name!r}: the train split has no batches to share among clients")
    try:
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    except (TypeError, RuntimeError) as exc:
        raise TaskError(
            f"task {task.name!r}: federated clients need train batches of tensors with one row shape ({exc})"
        ) from None
