"""Importance metrics: functions of a layer's statistics; a higher score means keep.

Each is a small pure function over (W, X, G, F); symbolic metrics plug in through the same
``Metric`` signature by name, ``expr:<formula>`` (see ``workers/expressions.py``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import torch

from prunehive.search.expr_syntax import terminals
from prunehive.workers.calibration import LayerStats
from prunehive.workers.expressions import expression_metric
from prunehive.workers.metric_names import EXPRESSION_PREFIX as EXPRESSION_PREFIX  # names, checked without torch
from prunehive.workers.metric_names import NEEDS_GRADIENTS

Metric = Callable[[LayerStats], torch.Tensor]


def magnitude(s: LayerStats) -> torch.Tensor:
    """|W|: the classic baseline."""
    return s.W.abs()


def wanda(s: LayerStats) -> torch.Tensor:
    """|W| * ||X||: weights times their input channel's activation norm (Sun et al. 2023)."""
    return s.W.abs() * s.X


def snip(s: LayerStats) -> torch.Tensor:
    """|W * G|: connection sensitivity of the loss (Lee et al. 2019)."""
    return (s.W * s.G).abs()


def taylor(s: LayerStats) -> torch.Tensor:
    """W^2 * F / 2: second-order Taylor loss change with the diagonal Fisher (OBD-style)."""
    return 0.5 * s.W.pow(2) * s.F


def random_metric(s: LayerStats, seed: int = 0) -> torch.Tensor:
    """Random scores, reproducible per layer shape and seed: the floor any metric should beat."""
    gen = torch.Generator().manual_seed(seed + zlib.crc32(str(tuple(s.W.shape)).encode()))
    return torch.rand(s.W.shape, generator=gen).to(s.W.device)


METRICS: dict[str, Metric] = {
    "magnitude": magnitude,
    "wanda": wanda,
    "snip": snip,
    "taylor": taylor,
    "random": random_metric,
}


def get_metric(name: str) -> Metric:
    """A built-in metric by name, or ``expr:<formula>`` compiled (ExpressionError if it does not parse)."""
    if name.startswith(EXPRESSION_PREFIX):
        return expression_metric(name.removeprefix(EXPRESSION_PREFIX))
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)} or expr:<formula>")
    return METRICS[name]


READS: dict[str, frozenset[str]] = {
    "magnitude": frozenset("W"),
    "wanda": frozenset("WX"),
    "snip": frozenset("WG"),
    "taylor": frozenset("WF"),
    "random": frozenset(),
}


def statistics_read(name: str) -> frozenset[str]:
    """Which of W, X, G and F a metric reads, so a federated server asks its clients only for those."""
    if name.startswith(EXPRESSION_PREFIX):
        return frozenset(terminals(expression_metric(name.removeprefix(EXPRESSION_PREFIX)).node))
    get_metric(name)  # an unknown name gets get_metric's error
    return READS[name]


def needs_gradients(name: str) -> bool:
    """Whether calibration must run backward passes for this metric (it reads G or F)."""
    if name.startswith(EXPRESSION_PREFIX):
        return expression_metric(name.removeprefix(EXPRESSION_PREFIX)).needs_gradients  # G after simplification
    return name in NEEDS_GRADIENTS
