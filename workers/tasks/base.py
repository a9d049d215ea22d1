"""The Task interface: a trained dense model, its data as batches, and how to score a model on them.

A task is built once per worker. It provides a *trained* model (``load_model``: loaded from a checkpoint
or a Hugging Face directory, or, for the built-in demos, an ``architecture`` trained on first use and
cached) and its data, either as ``loader(split)``, any iterable of ``(inputs, targets)`` batches (a
``DataLoader``, a generator; streamed, never required to fit in memory), or as ``split(name)``, whole
tensors for small in-memory data sets (which federated clients partition). Everything else (calibration
batches, evaluation for any output type including a Hugging Face ``ModelOutput``, recovery training)
comes from this class. Searches optimise ``validation`` and report ``test``; ``train`` feeds calibration.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from prunehive.workers.quality import Quality
from prunehive.workers.tasks.spec import TaskError
from prunehive.workers.tasks.training import (
    Batch,
    as_batch,
    cache_dir,
    cache_lock,
    cycled,
    sampled,
    seed_everything,
)

Split = Literal["train", "validation", "test"]
QualityKind = Literal["accuracy", "perplexity"]

__all__ = [
    "Batch",
    "Evaluation",
    "Observer",
    "QualityKind",
    "Split",
    "Task",
    "TaskError",
    "logits_of",
    "seed_everything",
]


@dataclass
class Evaluation:
    """Quality and loss of a model on one split, and how many items (targets) were scored."""

    quality: float
    loss: float
    count: int = 0


Observer = Callable[[int, torch.Tensor], None]  # (batch index, the scored positions' logits as (items, classes))


def logits_of(output: Any) -> torch.Tensor:
    """The prediction tensor of any model output: a tensor, a Hugging Face ``ModelOutput`` or a tuple."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


class Task:
    """Base class of every task: built-ins subclass it and so may user factories.

    Provide the model (override ``load_model``, or ``architecture`` plus a training recipe to train
    once and cache) and the data (override ``loader``, or ``split`` for small in-memory tensors).
    """

    name: ClassVar[str] = "task"
    quality: ClassVar[QualityKind] = "accuracy"
    description: ClassVar[str] = ""
    # The model is ``architecture()`` trained by the task's own recipe (shipped, cached or trained on first
    # use) even where ``load_model`` is overridden, so a federated simulation starts from the fresh architecture.
    trains_own_model: ClassVar[bool] = False
    batch_size: int = 64
    eval_batch_size: int = 512
    train_steps: int = 1000
    lr: float = 1e-3
    calibration_batch_size: int = 0  # rows per calibration batch; 0 means batch_size
    train_threads: int = 0  # torch threads while training the dense model; 0 keeps torch's default

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._model: nn.Module | None = None

    # ---- what a task provides: one of each pair --------------------------------------------
    def load_model(self) -> nn.Module:
        """The trained dense model. Default: ``architecture()`` trained once and cached on disk."""
        return self._load_or_train()

    def architecture(self) -> nn.Module:
        """A freshly initialised, untrained model (for tasks that train their own)."""
        raise TaskError(f"task {self.name!r} defines neither load_model() nor architecture()")

    def loader(self, name: Split) -> Iterable[Batch]:
        """The batches of a split, streamed: a DataLoader or any iterable of (inputs, targets)."""
        raise TaskError(f"task {self.name!r} defines neither loader() nor split()")

    def split(self, name: Split) -> Batch:
        """All inputs and targets of a split as tensors, for data small enough to hold in memory."""
        raise TaskError(f"task {self.name!r} has no in-memory split {name!r}; its data is streamed by loader()")

    def check_inputs(self) -> None:
        """Optional: cheap checks of the task's files, run once by the driver before a job exists (and by
        ``prune``), that raise ``TaskError`` naming a bad file rather than failing every worker later."""

    @property
    def in_memory(self) -> bool:
        """Whether the data comes as whole tensors (``split``) rather than streamed batches."""
        return type(self).split is not Task.split

    def fingerprint(self) -> str:
        """Changes whenever the cached dense model would differ (architecture, recipe, data)."""
        arch = repr(self.architecture())
        recipe = f"{self.train_steps}|{self.lr}|{self.batch_size}|{self.seed}"
        return hashlib.sha256((arch + recipe).encode()).hexdigest()[:12]

    # ---- derived behaviour --------------------------------------------------------------
    @property
    def higher_is_better(self) -> bool:
        return Quality.named(self.quality).higher_is_better

    def objective(self, evaluation: Evaluation) -> float:
        """A value to maximise: accuracy, or minus the log-perplexity (the mean loss)."""
        return evaluation.quality if self.higher_is_better else -evaluation.loss

    def loss_fn(self, output: Any, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over every target; half-precision logits are scored in float32."""
        logits = logits_of(output)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

    def _summed_loss(self, output: Any, target: torch.Tensor) -> float:
        """``loss_fn`` times the number of targets.

        PyTorch's CPU log-softmax is slow over a last dimension narrower than a SIMD vector, such as ten
        classes, so the default cross-entropy then takes the logits as one (1, classes, rows) sample: the
        same function and value at about a third of the cost. A task overriding ``loss_fn`` keeps its own.
        """
        n = target.numel()
        logits = logits_of(output)
        classes = logits.shape[-1]
        fast = logits.device.type == "cpu" and logits.dtype == torch.float32 and classes < 16 and n >= 64
        if type(self).loss_fn is Task.loss_fn and fast:
            logits = logits.reshape(-1, classes).t().contiguous().unsqueeze(0)
            return float(nn.functional.cross_entropy(logits, target.reshape(1, -1))) * n
        return float(self.loss_fn(output, target)) * n

    def batches(self, name: Split, batch_size: int | None = None) -> Iterator[Batch]:
        """The batches of a split: slices of ``split`` (of ``batch_size`` rows), or the ``loader``'s own."""
        if not self.in_memory:
            yield from (as_batch(item) for item in self.loader(name))
            return
        x, y = self.split(name)
        size = batch_size or self.eval_batch_size
        for start in range(0, len(x), size):
            yield x[start : start + size], y[start : start + size]

    def example_input(self) -> torch.Tensor:
        """One input row, for FLOP counting and tracing."""
        if self.in_memory:
            return self.split("validation")[0][:1]
        for x, _ in self.batches("validation"):
            return x[:1]
        raise TaskError(f"task {self.name!r}: the validation split has no batches")

    def calibration_batches(self, k: int, data: Batch | None = None) -> list[Batch]:
        """``k`` training batches, the same ones every time for a given seed (the first ``k`` when streamed);
        drawn from ``data`` instead when given (a federated client's own rows)."""
        if data is None and not self.in_memory:
            return list(itertools.islice(self.batches("train"), k))
        x, y = self.split("train") if data is None else data
        gen = torch.Generator().manual_seed(self.seed + 1)
        order = torch.randperm(len(x), generator=gen)
        size = self.calibration_batch_size or self.batch_size
        return [
            (x[order[i * size : (i + 1) * size]], y[order[i * size : (i + 1) * size]])
            for i in range(min(k, max(1, len(x) // size)))
        ]

    def evaluate(
        self, model: nn.Module, split: Split = "validation", limit: int | None = None, observe: Observer | None = None
    ) -> Evaluation:
        """Quality and mean loss over a split, or over its first ``limit`` items (target positions of a
        language model, samples of a classifier): the same prefix every time, so candidates scored at one
        search stage meet the same data. ``observe`` sees each batch's scored logits (see ``scoring``)."""
        # local: breaks the base-scoring import cycle (scoring imports base)
        from prunehive.workers.tasks.scoring import score

        return score(self, model, split, limit, observe)

    def train(
        self,
        model: nn.Module,
        steps: int,
        lr: float | None = None,
        after_step: Callable[[], None] | None = None,
        seed: int | None = None,
        data: Batch | None = None,
        batch_size: int | None = None,
        loss: Callable[[nn.Module, Batch], torch.Tensor] | None = None,
        cosine: bool = True,
    ) -> float:
        """Plain AdamW training; returns the mean loss. ``after_step`` re-applies pruning masks.

        Batches are drawn at random from ``data`` (default: the train split) when the data is in memory,
        and taken in order from ``loader("train")`` otherwise. A federated client passes its own rows as
        ``data``, to train nested sub-networks as well a ``loss`` of the model on a batch, and
        ``cosine=False``: its training goes on next round, so the learning rate stays constant (FedAvg).
        """
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(self.seed if seed is None else seed)
        if data is not None or self.in_memory:
            rows = self.split("train") if data is None else data
            source = sampled((rows[0].to(device), rows[1].to(device)), batch_size or self.batch_size, gen)
        else:
            source = cycled(lambda: self.batches("train"))
        opt = torch.optim.AdamW(model.parameters(), lr=lr or self.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1)) if cosine else None
        total = torch.zeros((), device=device)
        model.train()
        for x, y in itertools.islice(source, steps):
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            value = self.loss_fn(model(x), y) if loss is None else loss(model, (x, y))
            value.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if after_step is not None:
                after_step()
            total += value.detach()
        model.eval()
        return float(total) / max(steps, 1)

    def model(self) -> nn.Module:
        """The trained dense model, loaded once per task object."""
        if self._model is None:
            self._model = self.load_model()
            self._model.eval()
        return self._model

    def _load_or_train(self) -> nn.Module:
        path = cache_dir() / f"{self.name}-{self.fingerprint()}.pt"
        model = self.architecture()
        with cache_lock(path):
            if path.exists():
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            else:
                seed_everything(self.seed)
                model = self.architecture()
                self._train_dense(model)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                torch.save(model.state_dict(), tmp)
                os.replace(tmp, path)
        return model

    def _train_dense(self, model: nn.Module) -> None:
        """``train_steps`` of the task's own recipe, with ``train_threads`` torch threads."""
        threads = torch.get_num_threads()
        torch.set_num_threads(self.train_threads or threads)
        try:
            self.train(model, self.train_steps)
        finally:
            torch.set_num_threads(threads)

    def prunable_layers(self, model: nn.Module) -> list[str]:
        """Names of the layers whose weights may be pruned (default: every Linear and Conv2d)."""
        return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]

    def channel_prunable_layers(self, model: nn.Module) -> list[str]:
        """Layers whose output channels may be removed (default: all prunable but the last)."""
        return self.prunable_layers(model)[:-1]

    def layer_blocks(self, model: nn.Module) -> dict[str, str]:
        """Each prunable layer's block, so allocations and plots can read per block: the name up to its
        first numeric part (``model.layers.3`` for ``model.layers.3.mlp.up_proj``), else the layer itself."""
        out = {}
        for name in self.prunable_layers(model):
            match = re.match(r"^(.*?\.\d+)(\.|$)", name)
            out[name] = match.group(1) if match else name
        return out
