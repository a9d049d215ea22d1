"""A task whose clients misbehave on purpose, imported by the Flower client actors in the fault test.

Training steps are counted across all client processes in a file; the step numbered
``PRUNEHIVE_TEST_RAISE_AT`` raises inside one client's training, and the step numbered
``PRUNEHIVE_TEST_DIE_AT`` kills that client's process (a crashed or preempted device).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import torch

from prunehive.workers.tasks.digits import DigitsMLP


def _tick() -> int:
    path = Path(os.environ["PRUNEHIVE_TEST_STEP_COUNTER"])
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        n = int(f.read() or 0) + 1
        f.seek(0)
        f.truncate()
        f.write(str(n))
        return n


class FlakyClientTask(DigitsMLP):
    """Only training steps count (evaluation runs without gradients and never fails)."""

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            n = _tick()
            if n == int(os.environ["PRUNEHIVE_TEST_RAISE_AT"]):
                raise FloatingPointError("synthetic client failure")
            if n == int(os.environ["PRUNEHIVE_TEST_DIE_AT"]):
                os._exit(1)
        return super().loss_fn(output, target)


def flaky(seed: int = 0) -> FlakyClientTask:
    return FlakyClientTask(seed=seed)
