"""The Task interface: a dense model, its data splits, and how to score a model on them.

A task is built once per worker. ``model()`` returns the trained dense model (trained on first
use and cached on disk), ``calibration_batches`` feeds the hooks that collect statistics, and
``evaluate`` returns the task's quality on a split. Searches optimise ``validation`` and report
``test``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

Split = Literal["train", "validation", "test"]
QualityKind = Literal["accuracy", "perplexity"]
Batch = tuple[torch.Tensor, torch.Tensor]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so training and scoring are repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cache_dir() -> Path:
    """Where trained dense models live: PRUNEHIVE_CACHE or ~/.cache/prunehive."""
    root = os.environ.get("PRUNEHIVE_CACHE") or Path.home() / ".cache" / "prunehive"
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Evaluation:
    """Quality and loss of a model on one split."""

    quality: float
    loss: float


class Task(ABC):
    """Base class of every task: built-ins subclass it and so may user factories.

    Subclasses provide data (``split``), an untrained architecture (``architecture``) and a
    training recipe (``train_steps``, ``lr``, ``batch_size``); everything else is shared.
    """

    name: ClassVar[str] = "task"
    quality: ClassVar[QualityKind] = "accuracy"
    description: ClassVar[str] = ""
    batch_size: int = 64
    eval_batch_size: int = 512
    train_steps: int = 1000
    lr: float = 1e-3
    calibration_batch_size: int = 0  # rows per calibration batch; 0 means batch_size
    train_threads: int = 0  # torch threads while training the dense model; 0 keeps torch's default

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._model: nn.Module | None = None

    # ---- what a task must define --------------------------------------------------------
    @abstractmethod
    def split(self, name: Split) -> Batch:
        """All inputs and targets of a split, as tensors (small enough to hold in memory)."""

    @abstractmethod
    def architecture(self) -> nn.Module:
        """A freshly initialised, untrained model."""

    def fingerprint(self) -> str:
        """Changes whenever the cached dense model would differ (architecture, recipe, data)."""
        arch = repr(self.architecture())
        recipe = f"{self.train_steps}|{self.lr}|{self.batch_size}|{self.seed}"
        return hashlib.sha256((arch + recipe).encode()).hexdigest()[:12]

    # ---- derived behaviour --------------------------------------------------------------
    @property
    def higher_is_better(self) -> bool:
        return self.quality == "accuracy"

    def objective(self, evaluation: Evaluation) -> float:
        """A value to maximise: accuracy, or minus the log-perplexity (the mean loss)."""
        return evaluation.quality if self.higher_is_better else -evaluation.loss

    def loss_fn(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    def _summed_loss(self, output: torch.Tensor, target: torch.Tensor) -> float:
        """``loss_fn`` times the number of targets.

        PyTorch's CPU log-softmax is slow over a last dimension narrower than a SIMD vector, such as ten
        classes, so the default cross-entropy then takes the logits as one (1, classes, rows) sample: the
        same function and value at about a third of the cost. A task overriding ``loss_fn`` keeps its own.
        """
        n = target.numel()
        classes = output.shape[-1]
        if type(self).loss_fn is Task.loss_fn and output.device.type == "cpu" and classes < 16 and n >= 64:
            logits = output.reshape(-1, classes).t().contiguous().unsqueeze(0)
            return float(nn.functional.cross_entropy(logits, target.reshape(1, -1))) * n
        return float(self.loss_fn(output, target)) * n

    def example_input(self) -> torch.Tensor:
        return self.split("validation")[0][:1]

    def batches(self, name: Split, batch_size: int | None = None) -> Iterator[Batch]:
        x, y = self.split(name)
        size = batch_size or self.eval_batch_size
        for start in range(0, len(x), size):
            yield x[start : start + size], y[start : start + size]

    def calibration_batches(self, k: int) -> list[Batch]:
        """``k`` training batches, the same ones every time for a given seed."""
        x, y = self.split("train")
        gen = torch.Generator().manual_seed(self.seed + 1)
        order = torch.randperm(len(x), generator=gen)
        size = self.calibration_batch_size or self.batch_size
        return [
            (x[order[i * size : (i + 1) * size]], y[order[i * size : (i + 1) * size]])
            for i in range(min(k, max(1, len(x) // size)))
        ]

    def evaluate(self, model: nn.Module, split: Split = "validation") -> Evaluation:
        if any(m.training for m in model.modules()):  # about 4x cheaper than an unconditional eval()
            model.eval()
        device = next(model.parameters()).device
        # Batches are taken outside inference mode, so a split the task caches on first use stays an
        # ordinary tensor that training may use later; inference mode then skips autograd bookkeeping.
        batches = list(self.batches(split))
        total_loss, correct, count = 0.0, 0, 0
        with torch.inference_mode():
            for x, y in batches:
                if x.device != device or y.device != device:
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                out = model(x)
                n = y.numel()
                total_loss += self._summed_loss(out, y)
                if self.quality == "accuracy":
                    correct += int(out.argmax(-1).eq_(y).sum())
                count += n
        loss = total_loss / max(count, 1)
        quality = correct / max(count, 1) if self.quality == "accuracy" else float(np.exp(min(loss, 50.0)))
        return Evaluation(quality=quality, loss=loss)

    def train(
        self,
        model: nn.Module,
        steps: int,
        lr: float | None = None,
        after_step: Callable[[], None] | None = None,
        seed: int | None = None,
    ) -> None:
        """Plain Adam training on the train split; ``after_step`` re-applies pruning masks."""
        x, y = self.split("train")
        device = next(model.parameters()).device
        x, y = x.to(device), y.to(device)
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        opt = torch.optim.AdamW(model.parameters(), lr=lr or self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(x), (self.batch_size,), generator=gen).to(device)
            opt.zero_grad(set_to_none=True)
            loss = self.loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
        model.eval()

    def model(self) -> nn.Module:
        """The trained dense model: loaded from the disk cache or trained once and cached."""
        if self._model is None:
            self._model = self._load_or_train()
        return self._model

    def _load_or_train(self) -> nn.Module:
        path = cache_dir() / f"{self.name}-{self.fingerprint()}.pt"
        model = self.architecture()
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two workers starting together train it once
            if path.exists():
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            else:
                seed_everything(self.seed)
                model = self.architecture()
                threads = torch.get_num_threads()
                torch.set_num_threads(self.train_threads or threads)
                try:
                    self.train(model, self.train_steps)
                finally:
                    torch.set_num_threads(threads)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                torch.save(model.state_dict(), tmp)
                os.replace(tmp, path)
        model.eval()
        return model

    def prunable_layers(self, model: nn.Module) -> list[str]:
        """Names of the layers whose weights may be pruned (default: every Linear and Conv2d)."""
        return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]

    def channel_prunable_layers(self, model: nn.Module) -> list[str]:
        """Layers whose output channels may be removed (default: all prunable but the last)."""
        return self.prunable_layers(model)[:-1]
