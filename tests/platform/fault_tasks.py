"""Tasks that misbehave on purpose, imported by Ray workers in the fault tests."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from prunehive.workers.tasks.base import Evaluation, Split
from prunehive.workers.tasks.digits import DigitsMLP


def _when_fc5_sparse(model: nn.Module, act: Callable[[], None]) -> torch.utils.hooks.RemovableHandle:
    """Run ``act`` in fc5's forward when the weight it computes with is over half zeros. (The engine swaps
    a pruned weight in only for its layer's forward, so that is where a candidate's sparsity shows.)"""

    def check(module: nn.Module, _args: object) -> None:
        if float((module.weight == 0).float().mean()) > 0.5:
            act()

    return dict(model.named_modules())["fc5"].register_forward_pre_hook(check)


def _fail() -> None:
    raise FloatingPointError("synthetic failure: fc5 too sparse")


class FailingTask(DigitsMLP):
    """Raises inside evaluation whenever the last layer is pruned past 50%."""

    def evaluate(self, model: nn.Module, split: Split = "validation", **kwargs: object) -> Evaluation:
        handle = _when_fc5_sparse(model, _fail)
        try:
            return super().evaluate(model, split, **kwargs)  # type: ignore[arg-type]
        finally:
            handle.remove()


class HangingTask(DigitsMLP):
    """Hangs (as a pathological metric or a stuck device would) when fc5 is pruned past 50%."""

    def evaluate(self, model: nn.Module, split: Split = "validation", **kwargs: object) -> Evaluation:
        handle = _when_fc5_sparse(model, lambda: time.sleep(600))
        try:
            return super().evaluate(model, split, **kwargs)  # type: ignore[arg-type]
        finally:
            handle.remove()


class DyingTask(DigitsMLP):
    """The first evaluation anywhere kills its worker process (a crashed or preempted node)."""

    def evaluate(self, model: nn.Module, split: Split = "validation") -> Evaluation:
        flag = Path(os.environ["PRUNEHIVE_TEST_KILL_FLAG"])
        try:
            fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().evaluate(model, split)
        os.close(fd)
        time.sleep(0.2)
        os._exit(1)


class SlowTask(DigitsMLP):
    """Slow enough evaluations that a test can kill the driver mid-search."""

    def evaluate(self, model: nn.Module, split: Split = "validation") -> Evaluation:
        time.sleep(0.15)
        return super().evaluate(model, split)


def failing(seed: int = 0) -> FailingTask:
    return FailingTask(seed=seed)


def hanging(seed: int = 0) -> HangingTask:
    return HangingTask(seed=seed)


def dying(seed: int = 0) -> DyingTask:
    return DyingTask(seed=seed)


def slow(seed: int = 0) -> SlowTask:
    return SlowTask(seed=seed)
