"""Evolved metric formulas as torch functions: a whitelisted interpreter over the parsed syntax tree.

Nothing here calls ``eval`` or DEAP's ``gp.compile``: every operator name maps to one entry of a fixed
table of torch functions, with the same numerical guards the canonicaliser's constant folding uses
(sqrt and log read |x|, log adds EPS, exp clamps, division keeps |denominator| >= EPS). A formula
that still yields NaN/inf, or a score of the wrong shape, raises MetricValueError so that the
evaluation engine can give the candidate the worst fitness instead of pruning with garbage.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from prunehive.search.expr_canonical import canonicalize
from prunehive.search.expr_syntax import (
    EPS,
    EXP_MAX,
    Const,
    Expr,
    Terminal,
    parse,
    to_string,
    uses_gradient,
)
from prunehive.workers.calibration import LayerStats

Tensor = torch.Tensor


class MetricValueError(ValueError):
    """A formula gave NaN/inf scores or scores that are not shaped like the layer's weights."""


def _minmax(x: Tensor) -> Tensor:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo + EPS)


def _zscore(x: Tensor) -> Tensor:
    return (x - x.mean()) / (x.std(correction=0) + EPS)


def _safe_div(a: Tensor, b: Tensor) -> Tensor:
    return a / torch.where(b.abs() < EPS, torch.where(b < 0, -EPS, EPS), b)


UNARY_OPS: dict[str, Callable[[Tensor], Tensor]] = {
    "abs": torch.abs,
    "sqr": torch.square,
    "sqrt": lambda x: torch.sqrt(x.abs()),
    "log": lambda x: torch.log(x.abs() + EPS),
    "exp": lambda x: torch.exp(x.clamp(max=EXP_MAX)),
    "neg": torch.neg,
    "tanh": torch.tanh,
    "minmax": _minmax,
    "zscore": _zscore,
}
BINARY_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": _safe_div,
}


def _evaluate(e: Expr, s: LayerStats) -> Tensor:
    if isinstance(e, Terminal):
        return {"W": s.W, "X": s.X, "G": s.G}[e.name]
    if isinstance(e, Const):
        return torch.full_like(s.W, e.value)
    args = [_evaluate(a, s) for a in e.args]
    return UNARY_OPS[e.op](args[0]) if len(args) == 1 else BINARY_OPS[e.op](args[0], args[1])


class ExpressionMetric:
    """A formula usable wherever a built-in ``Metric`` is: called on LayerStats, returns scores."""

    def __init__(self, node: Expr) -> None:
        self.node = node
        self.expression = to_string(node)
        self.__name__ = f"expr:{self.expression}"
        self.needs_gradients = uses_gradient(node)

    def __repr__(self) -> str:
        return f"ExpressionMetric({self.expression!r})"

    def __call__(self, s: LayerStats) -> Tensor:
        try:
            with torch.no_grad():
                score = _evaluate(self.node, s)
        except RuntimeError as err:  # shapes that do not broadcast
            raise MetricValueError(f"{self.__name__} failed on a layer of shape {tuple(s.W.shape)}: {err}") from err
        if score.shape != s.W.shape:
            shapes = f"{tuple(score.shape)}, not {tuple(s.W.shape)}"
            raise MetricValueError(f"{self.__name__} gives scores of shape {shapes}")
        if not bool(torch.isfinite(score).all()):
            raise MetricValueError(f"{self.__name__} gives NaN or infinite scores")
        if any(score is t for t in (s.W, s.X, s.G)):
            score = score.clone()  # never hand out the statistics themselves
        return score


def compile_expression(node: Expr) -> ExpressionMetric:
    """The metric for ``node`` exactly as written (no canonicalisation)."""
    return ExpressionMetric(node)


def expression_metric(text: str) -> ExpressionMetric:
    """Parse, canonicalise and compile ``text``; raises ExpressionError for text outside the language."""
    return ExpressionMetric(canonicalize(parse(text)))
