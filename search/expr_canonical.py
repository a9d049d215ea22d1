"""The canonical form of metric expressions: many equivalent formulas map to one string, so a search
never pays twice for the same metric.

Rewrites are sound under the guards the workers' evaluator applies (``EPS``, exp's clamp): sorted
and flattened add/mul with like terms merged, folded constants, and trivial or opposing operators
removed. Pure Python: no torch.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable

from prunehive.search.expr_syntax import (
    EPS,
    EXP_MAX,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_NODES,
    Const,
    Expr,
    ExpressionError,
    Node,
    Terminal,
    height,
    parse,
    size,
    to_string,
)


def _safe(b: float) -> float:
    return b if abs(b) >= EPS else (-EPS if b < 0 else EPS)


_FOLD: dict[str, Callable[..., float]] = {
    "abs": abs,
    "sqr": lambda a: a * a,
    "sqrt": lambda a: math.sqrt(abs(a)),
    "log": lambda a: math.log(abs(a) + EPS),
    "exp": lambda a: math.exp(min(a, EXP_MAX)),
    "neg": lambda a: -a,
    "tanh": math.tanh,
    "minmax": lambda a: 0.0,  # a constant layer: (x - min) / (0 + EPS)
    "zscore": lambda a: 0.0,
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / _safe(b),
}


def _fold(op: str, values: list[float]) -> Const | None:
    """Evaluate an operator on constants with the same guards the torch evaluator applies."""
    value = float(_FOLD[op](*values))
    return Const(value + 0.0) if math.isfinite(value) else None


def _balanced(op: str, operands: list[Expr]) -> Expr:
    """An add/mul chain of ``operands`` with the least height: always merge the two shallowest."""
    heap = [(height(e), to_string(e), i, e) for i, e in enumerate(operands)]
    heapq.heapify(heap)
    count = len(heap)
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        node = Node(op, (a[3], b[3]) if a[1] <= b[1] else (b[3], a[3]))
        heapq.heappush(heap, (max(a[0], b[0]) + 1, to_string(node), count, node))
        count += 1
    return heap[0][3]


def _factors(e: Expr) -> tuple[float, list[Expr]]:
    """``e`` as constant * product of factors, seeing through mul, neg and constants."""
    if isinstance(e, Const):
        return e.value, []
    if isinstance(e, Node) and e.op in ("mul", "neg"):
        c = 1.0 if e.op == "mul" else -1.0
        fs: list[Expr] = []
        for arg in e.args:
            ca, fa = _factors(arg)
            c, fs = c * ca, fs + fa
        return c, fs
    return 1.0, [e]


_Terms = dict[str, tuple[float, list[Expr]]]  # factor key -> (coefficient, factors); key "" = the constant


def _collect(e: Expr, sign: float = 1.0) -> _Terms:
    acc: _Terms = {}
    _terms(e, sign, acc)
    return acc


def _terms(e: Expr, sign: float, acc: _Terms) -> None:
    """Collect ``sign * e`` as coefficient * product terms, merging like terms."""
    if isinstance(e, Node) and e.op in ("add", "sub", "neg"):
        signs = {"add": (1.0, 1.0), "sub": (1.0, -1.0), "neg": (-1.0,)}[e.op]
        for arg, s in zip(e.args, signs, strict=True):
            _terms(arg, sign * s, acc)
        return
    c, fs = _factors(e)
    fs = sorted(fs, key=to_string)
    key = ",".join(to_string(f) for f in fs)
    old = acc.get(key, (0.0, fs))[0]
    acc[key] = (old + sign * c, fs)


def _sum(acc: _Terms) -> Expr:
    """Render collected terms: ``add`` of the positive ones, minus ``add`` of the negative ones."""
    items = [(c, fs) for c, fs in acc.values() if c != 0.0]
    if len(items) <= 1:
        return _product(*items[0]) if items else Const(0.0)
    pos = [_product(c, fs) for c, fs in items if c > 0]
    neg = [_product(-c, fs) for c, fs in items if c < 0]
    if not neg:
        return _balanced("add", pos)
    if not pos:
        return Node("neg", (_balanced("add", neg),))
    return Node("sub", (_balanced("add", pos), _balanced("add", neg)))


def _product(c: float, factors: list[Expr]) -> Expr:
    """Render constant * factors: equal factors pair into sqr, a sign goes into a difference or a neg."""
    if c == 0.0 or not factors:
        return Const(c + 0.0)
    fs = sorted(factors, key=to_string)
    while True:
        keys = [to_string(f) for f in fs]
        dup = next((i for i in range(len(fs) - 1) if keys[i] == keys[i + 1]), None)
        if dup is None:
            break
        fs = sorted(fs[:dup] + fs[dup + 2 :] + [_unary("sqr", fs[dup])], key=to_string)
    if c == -1.0 and len(fs) == 1 and isinstance(fs[0], Node) and fs[0].op in ("add", "sub"):
        return _negate(fs[0])
    subs = [i for i, f in enumerate(fs) if isinstance(f, Node) and f.op == "sub"]
    if c < 0 and subs:  # -(a - b) * y = (b - a) * y: the sign goes into a difference
        c, fs = -c, sorted(fs[: subs[0]] + fs[subs[0] + 1 :] + [_negate(fs[subs[0]])], key=to_string)
    if c == -1.0:
        return Node("neg", (_balanced("mul", fs),))
    return _balanced("mul", fs + ([Const(c)] if c != 1.0 else []))


def _negate(e: Expr) -> Expr:
    return _sum(_collect(e, -1.0))


def _is_negative_form(e: Expr) -> bool:
    return isinstance(e, Node) and (e.op == "neg" or (e.op == "mul" and _factors(e)[0] < 0))


def _nonnegative(e: Expr) -> bool:
    """Provably >= 0: X (a norm), abs, sqr, sqrt, exp, minmax, and products, quotients and sums of those."""
    if not isinstance(e, Node):
        return e == Terminal("X") or (isinstance(e, Const) and e.value >= 0.0)
    if e.op in ("abs", "sqr", "sqrt", "exp", "minmax"):
        return True
    return e.op in ("mul", "div", "add") and all(_nonnegative(a) for a in e.args)


def _unary(op: str, x: Expr) -> Expr:
    """Rules for one-argument operators; ``x`` is already canonical."""
    if isinstance(x, Const):
        return _fold(op, [x.value]) or Node(op, (x,))
    if op == "neg":
        return _negate(x)
    if op in ("abs", "sqr", "sqrt", "log"):  # even functions: pick one of x and -x for good
        x = min(x, _negate(x), key=lambda e: (_is_negative_form(e), to_string(e)))
    if op == "tanh" and _is_negative_form(x):  # odd
        return _negate(_unary("tanh", _negate(x)))
    inner = x.args[0] if isinstance(x, Node) and len(x.args) == 1 else None
    xop = x.op if isinstance(x, Node) else ""
    if op == "abs" and _nonnegative(x):
        return x
    if op in ("abs", "sqr", "sqrt") and xop == "mul" and _factors(x)[0] != 1.0:
        c, fs = _factors(x)  # |c x| = |c| |x|, (c x)^2 = c^2 x^2, sqrt|c x| = sqrt|c| sqrt|x|
        scale = {"abs": abs(c), "sqr": c * c, "sqrt": math.sqrt(abs(c))}[op]
        return _product(scale, [_unary(op, _product(1.0, fs))])
    if inner is not None:
        if op in ("sqr", "sqrt", "log") and xop == "abs":
            return _unary(op, inner)  # these read |x| anyway
        if (op, xop) in (("sqr", "sqrt"), ("sqrt", "sqr"), ("exp", "log")):
            return _unary("abs", inner)  # exp(log(x)) = |x| + EPS under the guards
        if (op, xop) == ("log", "exp"):
            return inner  # exact until exp's clamp
        if op in ("minmax", "zscore") and xop in ("minmax", "zscore"):
            return _unary(op, inner)  # both are invariant to positive affine maps
    if op in ("minmax", "zscore") and xop == "mul" and 0.0 < _factors(x)[0] != 1.0:
        return _unary(op, _product(1.0, _factors(x)[1]))  # drop a positive scale
    if op in ("minmax", "zscore") and xop in ("add", "sub"):
        acc = _collect(x)
        if acc.pop("", (0.0, []))[0] != 0.0:
            return _unary(op, _sum(acc))  # drop a shift
    return Node(op, (x,))


def _rewrite(op: str, args: tuple[Expr, ...]) -> Expr:
    """One node whose arguments are already canonical."""
    if all(isinstance(a, Const) for a in args):
        folded = _fold(op, [a.value for a in args])  # type: ignore[union-attr]
        if folded is not None:
            return folded
    if len(args) == 1:
        return _unary(op, args[0])
    a, b = args
    if op in ("add", "sub"):
        return _sum(_collect(Node(op, args)))
    if op == "mul":
        return _product(*_factors(Node(op, args)))
    if a == b:
        return Const(1.0)  # div(x, x), up to the guard at |x| < EPS
    if isinstance(a, Const) and a.value == 0.0:
        return Const(0.0)
    if isinstance(b, Const) and abs(b.value) >= EPS:
        c, fs = _factors(a)
        return _product(c / b.value, fs)
    return Node("div", args)


def _finite(e: Expr) -> bool:
    if isinstance(e, Const):
        return math.isfinite(e.value)
    return all(_finite(a) for a in e.args) if isinstance(e, Node) else True


def _simplify(e: Expr) -> Expr:
    if not isinstance(e, Node):
        return e
    args = tuple(_simplify(a) for a in e.args)
    out = _rewrite(e.op, args)
    return out if _finite(out) else Node(e.op, args)  # a rule that overflowed a constant is not applied


def canonicalize(e: Expr) -> Expr:
    """A normal form: sorted and flattened add/mul, folded constants, trivial and opposing ops removed.

    Equal outputs mean equal metrics (up to the EPS guards and exp's clamp); different outputs may
    still be equal. Raises ExpressionError if the result would exceed the parser's limits.
    """
    for _ in range(8):
        nxt = _simplify(e)
        if nxt == e:
            break
        e = nxt
    text = to_string(e)
    if height(e) > MAX_DEPTH or size(e) > MAX_NODES or len(text) > MAX_LENGTH:
        raise ExpressionError(f"the canonical form {text[:80]!r} exceeds the expression limits")
    return e


def canonical(text: str) -> str:
    return to_string(canonicalize(parse(text)))
