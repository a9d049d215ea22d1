"""Tasks that misbehave on purpose, imported by Ray workers in the fault tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

from torch import nn

from prunehive.workers.tasks.base import Evaluation, Split
from prunehive.workers.tasks.digits import DigitsMLP


class FailingTask(DigitsMLP):
    """Raises inside evaluation whenever the last layer is pruned past 50%."""

    def evaluate(self, model: nn.Module, split: Split = "validation") -> Evaluation:
        fc5 = dict(model.named_modules())["fc5"]
        if float((fc5.weight == 0).float().mean()) > 0.5:
            raise FloatingPointError("synthetic failure: fc5 too sparse")
        return super().evaluate(model, split)


class HangingTask(DigitsMLP):
    """Hangs (as a pathological metric or a stuck device would) when fc5 is pruned past 50%."""

    def evaluate(self, model: nn.Module, split: Split = "validation") -> Evaluation:
        fc5 = dict(model.named_modules())["fc5"]
        if float((fc5.weight == 0).float().mean()) > 0.5:
            time.sleep(600)
        return super().evaluate(model, split)


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
