"""The names of the importance metrics and the check of a metric name, without torch.

A spec names its metric before any worker exists, and the API server answers a bad one with a 422;
neither should load torch for that. The metric functions themselves live in ``workers/metrics.py``.
"""

from __future__ import annotations

from prunehive.search.expr_canonical import canonicalize
from prunehive.search.expr_syntax import parse

METRIC_NAMES = ("magnitude", "wanda", "snip", "taylor", "random")
NEEDS_GRADIENTS = frozenset({"snip", "taylor"})
EXPRESSION_PREFIX = "expr:"


def check_metric_name(name: str) -> str:
    """``name`` if it is a built-in metric or an ``expr:`` formula in the language; else ValueError.

    A formula goes through the same parse and normal form as compiling it would, so its ExpressionError
    points at the offending token.
    """
    if name.startswith(EXPRESSION_PREFIX):
        canonicalize(parse(name.removeprefix(EXPRESSION_PREFIX)))
        return name
    if name not in METRIC_NAMES:
        raise ValueError(f"{name!r} is not one of {', '.join([*METRIC_NAMES, f'{EXPRESSION_PREFIX}<expression>'])}")
    return name
