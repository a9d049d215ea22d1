"""Calibration statistics collected with hooks: what data-aware metrics need besides W.

X is the per-input-channel L2 norm of a layer's input over all calibration tokens (Wanda);
G is the mean gradient of the loss and F the mean squared gradient, a diagonal Fisher
estimate (SNIP, Taylor). Each is collected only when something reads it: X is a vector per
layer, but G and F are each as large as the layer's weights.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from prunehive.workers.allocator import LARGE, release_freed
from prunehive.workers.tasks.base import Batch, Task

ALL = frozenset("WXGF")


@dataclass
class LayerStats:
    """Everything a scoring metric may read for one layer. X is pre-broadcast to W's shape."""

    W: torch.Tensor
    X: torch.Tensor
    G: torch.Tensor
    F: torch.Tensor

    @staticmethod
    def broadcast_x(norms: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Per-input-channel norms laid out along W's input dimension."""
        shape = [1, -1] + [1] * (weight.dim() - 2)
        return norms.reshape(shape).expand_as(weight)


def absent(weight: torch.Tensor) -> torch.Tensor:
    """Zeros of the weight's shape without memory: a statistic nobody reads."""
    return torch.zeros((), dtype=weight.dtype, device=weight.device).expand_as(weight)


def _input_sq_norms(module: nn.Module, inp: torch.Tensor) -> torch.Tensor:
    """Sum of squares of each input channel over batch, positions and (for conv) space."""
    if isinstance(module, nn.Conv2d):
        return inp.detach().pow(2).sum(dim=(0, 2, 3))
    return inp.detach().reshape(-1, inp.shape[-1]).pow(2).sum(dim=0)


def calibrate(
    task: Task, model: nn.Module, names: list[str], calib: list[Batch], keep: Iterable[str]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Input norms, mean gradients and mean squared gradients of the named layers over ``calib``: each
    only if ``keep`` names it (X, G, F); backward passes run only for G or F."""
    keep = set(keep)
    modules = dict(model.named_modules())
    sq: dict[str, torch.Tensor] = {}
    grad_sum = {n: torch.zeros_like(modules[n].weight) for n in names} if "G" in keep else {}
    grad_sq = {n: torch.zeros_like(modules[n].weight) for n in names} if "F" in keep else {}
    backward = bool(grad_sum or grad_sq)

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
            norms = _input_sq_norms(module, args[0])
            sq[name] = sq[name] + norms if name in sq else norms
            if args[0].numel() * args[0].element_size() >= LARGE:
                release_freed()  # the squares of a large input

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names] if "X" in keep else []
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        for x, y in calib:
            x, y = x.to(device), y.to(device)
            if backward:
                model.zero_grad(set_to_none=True)
                task.loss_fn(model(x), y).backward()
                for n in names:
                    g = modules[n].weight.grad
                    if g is not None:
                        if n in grad_sum:
                            grad_sum[n] += g
                        if n in grad_sq:
                            grad_sq[n] += g.pow(2)
            elif handles:
                with torch.no_grad():
                    model(x)
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    k = max(len(calib), 1)
    for sums in (grad_sum, grad_sq):
        for t in sums.values():
            t.div_(k)
    return {n: s.sqrt() for n, s in sq.items()}, grad_sum, grad_sq


def collect_stats(
    task: Task,
    model: nn.Module,
    names: list[str],
    batches: int = 8,
    with_grads: bool = True,
    data: list[Batch] | None = None,
) -> dict[str, LayerStats]:
    """Run ``batches`` calibration batches (or the given ``data``, e.g. a federated client's own rows)
    through ``model`` with hooks on the named layers; G and F are zeros without ``with_grads``."""
    calib = task.calibration_batches(batches) if data is None else data
    norms, g, f = calibrate(task, model, names, calib, "XGF" if with_grads else "X")
    modules = dict(model.named_modules())
    out = {}
    for n in names:
        w = modules[n].weight.detach()
        x = LayerStats.broadcast_x(norms[n], w)
        out[n] = LayerStats(W=w.clone(), X=x, G=g.get(n, absent(w)), F=f.get(n, absent(w)))
    return out


class Statistics(Mapping[str, LayerStats]):
    """An engine's statistics: W is the live (dense) weight itself, never a copy; X is collected on first
    read (magnitude never runs a calibration pass); G and F only at build, and only when asked for."""

    def __init__(
        self, task: Task, model: nn.Module, names: list[str], batches: int, reads: Iterable[str] = ALL
    ) -> None:
        self.task, self.model, self.names, self.batches = task, model, names, batches
        modules = dict(model.named_modules())
        self.weights = {n: modules[n].weight for n in names}
        wanted = set(reads) & {"X", "G", "F"}
        self.norms: dict[str, torch.Tensor] | None = None
        self.G: dict[str, torch.Tensor] = {}
        self.F: dict[str, torch.Tensor] = {}
        if wanted & {"G", "F"}:  # one pass for all: backward passes see the inputs anyway
            self.norms, self.G, self.F = calibrate(task, model, names, self._calib(), wanted | {"X"})
        elif "X" in wanted:
            self._collect_norms()

    @property
    def gradients(self) -> frozenset[str]:
        return frozenset(k for k in ("G", "F") if getattr(self, k))

    def _calib(self) -> list[Batch]:
        return self.task.calibration_batches(self.batches)

    def _collect_norms(self) -> dict[str, torch.Tensor]:
        if self.norms is None:
            self.norms = calibrate(self.task, self.model, self.names, self._calib(), "X")[0]
        return self.norms

    def layer(self, name: str, reads: Iterable[str] = ALL) -> LayerStats:
        """``name``'s statistics with those ``reads`` does not name left as zeros without memory."""
        reads = set(reads)
        w = self.weights[name].detach()
        x = LayerStats.broadcast_x(self._collect_norms()[name], w) if "X" in reads else absent(w)
        g = self.G.get(name) if "G" in reads else None
        f = self.F.get(name) if "F" in reads else None
        return LayerStats(W=w, X=x, G=absent(w) if g is None else g, F=absent(w) if f is None else f)

    def __getitem__(self, name: str) -> LayerStats:
        return self.layer(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)
