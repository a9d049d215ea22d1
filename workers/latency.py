"""Measured latency of a pruned candidate on the worker's own device, against the dense model.

FLOPs are a poor proxy for speed, so a worker can time what a user would deploy: the physically
smaller model for ``channel`` (Torch-Pruning, through ``PruningEngine.export``); 2:4 weights as torch's
semi-structured sparse tensors where a CUDA GPU is present; otherwise the same dense kernel as the
dense model, which is timed but reported as what it is, no speedup. Pruned and dense passes are
interleaved, so a change in load from other processes moves both medians alike.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn
from torch.sparse import to_sparse_semi_structured

from prunehive.workers.contracts import EvalResult, LatencyRequest

if TYPE_CHECKING:
    from prunehive.workers.engine import PruningEngine

Kernel = Literal["channel", "semi-structured", "dense"]


@dataclass(frozen=True)
class Timing:
    """One candidate's medians; ``speedup`` is 1.0 on the dense kernel, whatever the noise says."""

    latency_ms: float
    dense_ms: float
    speedup: float
    kernel: Kernel


def batch_of(example: torch.Tensor, batch: int) -> torch.Tensor:
    """``batch`` rows made by cycling the rows of ``example`` (a task's example input has one)."""
    index = torch.arange(batch, device=example.device) % example.shape[0]
    return example[index].contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _once(model: nn.Module, inputs: torch.Tensor) -> float:
    _sync(inputs.device)
    start = time.perf_counter()
    model(inputs)
    _sync(inputs.device)
    return time.perf_counter() - start


def paired_ms(
    dense: nn.Module, pruned: nn.Module, inputs: torch.Tensor, repeats: int = 30, warmup: int = 3
) -> tuple[float, float]:
    """Median milliseconds per forward pass of ``dense`` and of ``pruned``, timed in alternation
    after ``warmup`` untimed passes of each."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"latency needs repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    dense_s, pruned_s = [], []
    with torch.inference_mode():
        for _ in range(warmup):
            dense(inputs)
            pruned(inputs)
        for _ in range(repeats):
            dense_s.append(_once(dense, inputs))
            pruned_s.append(_once(pruned, inputs))
    return 1000.0 * statistics.median(dense_s), 1000.0 * statistics.median(pruned_s)


def semi_structured(model: nn.Module) -> nn.Module:
    """2:4 Linear weights as semi-structured sparse tensors (CUDA, half precision); layers whose shape
    the sparse kernels do not take stay dense."""
    model = model.half()
    for module in model.modules():
        if isinstance(module, nn.Linear):
            try:
                sparse = to_sparse_semi_structured(module.weight.detach())
            except (RuntimeError, ValueError):
                continue
            module.weight = nn.Parameter(sparse, requires_grad=False)
    return model


def uses_semi_structured(engine: PruningEngine) -> bool:
    g = engine.granularity
    return g.kind == "nm" and (g.n, g.m) == (2, 4) and engine.device.type == "cuda"


def deployable(engine: PruningEngine, sparsity: Mapping[str, float] | Iterable[float]) -> tuple[nn.Module, Kernel]:
    """The model a user would run for this candidate, and which kernel it runs on."""
    model = engine.export(sparsity).eval()
    if engine.granularity.kind == "channel":
        return model, "channel"
    if uses_semi_structured(engine):
        return semi_structured(model), "semi-structured"
    return model, "dense"


class LatencyMeter:
    """Times candidates of one engine at one batch size; built once per worker, only when a job asks."""

    def __init__(self, engine: PruningEngine, request: LatencyRequest) -> None:
        self.engine = engine
        self.request = request
        self.inputs = batch_of(engine.example, request.batch)
        # The dense reference runs in the precision its pruned counterparts do.
        half = uses_semi_structured(engine)
        self.dense = copy.deepcopy(engine.model).half().eval() if half else engine.model
        if half and self.inputs.is_floating_point():
            self.inputs = self.inputs.half()

    def measure(self, sparsity: Mapping[str, float] | Iterable[float]) -> Timing:
        model, kernel = deployable(self.engine, sparsity)
        training = self.dense.training
        self.dense.eval()
        try:
            dense_ms, ms = paired_ms(self.dense, model, self.inputs, self.request.repeats, self.request.warmup)
        finally:
            self.dense.train(training)
        speedup = 1.0 if kernel == "dense" else dense_ms / ms
        return Timing(ms, dense_ms, speedup, kernel)

    def attach(self, result: EvalResult, sparsity: Mapping[str, float] | Iterable[float]) -> EvalResult:
        """``result`` with the candidate's ``latency_ms`` and ``speedup``."""
        timing = self.measure(sparsity)
        return replace(result, latency_ms=timing.latency_ms, speedup=timing.speedup)
