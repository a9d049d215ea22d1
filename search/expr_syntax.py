"""The expression language of evolved pruning metrics: its names, trees, a hand-written parser and printer.

Formulas over a layer's statistics (W weights, X input-channel norms, G mean gradient) travel between
processes as text, so text is only ever tokenised and parsed here: names come from a fixed table and
numbers go through ``float()``; nothing reaches ``eval``. The normal form that makes equivalent
formulas one string lives in ``expr_canonical``. Pure Python: no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

TERMINALS = ("W", "X", "G")
UNARY = ("abs", "sqr", "sqrt", "log", "exp", "neg", "tanh", "minmax", "zscore")
BINARY = ("add", "sub", "mul", "div")
ARITY = {**dict.fromkeys(UNARY, 1), **dict.fromkeys(BINARY, 2)}
MAX_DEPTH, MAX_NODES, MAX_LENGTH = 12, 200, 2000
EPS = 1e-8  # guards: log(|x| + EPS), |denominator| >= EPS, minmax/zscore denominators (+ EPS)
EXP_MAX = 30.0  # exp(min(x, EXP_MAX)) keeps float32 scores finite


class ExpressionError(ValueError):
    """A formula that cannot be parsed or is outside the language's limits; names token and position."""

    def __init__(self, message: str, text: str = "", position: int | None = None, hint: str = "") -> None:
        if position is not None:
            shown = text if len(text) <= 60 else text[max(0, position - 25) : position + 25]
            message = f"{message} at position {position} in {shown!r}"
        super().__init__(f"{message}; {hint}" if hint else message)
        self.position = position


@dataclass(frozen=True)
class Terminal:
    name: str


@dataclass(frozen=True)
class Const:
    value: float


@dataclass(frozen=True)
class Node:
    op: str
    args: tuple[Expr, ...]


Expr = Node | Terminal | Const

# ---- parsing ------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))"
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "num" | "name" | "punct" | "end"
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    """All tokens; an unreadable character becomes a final "bad" token, reported when the parser reaches it."""
    tokens, pos = [], 0
    while True:
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            rest = text[pos:].lstrip()
            at = len(text) - len(rest)
            tokens.append(_Token("bad" if rest else "end", rest[:1], at))
            return tokens
        tokens.append(_Token(match.lastgroup, match[match.lastgroup], match.start(match.lastgroup)))
        pos = match.end()


def _shown(token: _Token) -> str:
    return repr(token.text) if token.text else "the end of the input"


class _Parser:
    """Recursive descent over ``expr := NUMBER | TERMINAL | OP '(' expr (',' expr)* ')'``."""

    def __init__(self, text: str) -> None:
        self.text, self.tokens, self.i, self.nodes = text, _tokenize(text), 0, 0

    def error(self, message: str, token: _Token, hint: str = "") -> ExpressionError:
        return ExpressionError(message, self.text, token.pos, hint)

    def take(self) -> _Token:
        token = self.tokens[self.i]
        if token.kind == "bad":
            hint = "write neg(x) to negate" if token.text == "-" else ""
            raise self.error(f"unexpected character {token.text!r}", token, hint)
        self.i += token.kind != "end"
        return token

    def expr(self, depth: int) -> Expr:
        tok = self.take()
        self.nodes += 1
        if depth > MAX_DEPTH:
            raise self.error(f"expression is deeper than {MAX_DEPTH} levels", tok)
        if self.nodes > MAX_NODES:
            raise self.error(f"expression has more than {MAX_NODES} nodes", tok)
        if tok.kind == "num":
            value = float(tok.text)
            if not math.isfinite(value):
                raise self.error(f"constant {tok.text!r} is out of range", tok)
            return Const(value + 0.0)
        if tok.kind != "name":
            raise self.error(f"expected an expression, got {_shown(tok)}", tok)
        following = self.tokens[self.i]
        if tok.text in TERMINALS:
            if following.text == "(":
                raise self.error(f"{tok.text!r} takes no arguments", following)
            return Terminal(tok.text)
        if tok.text not in ARITY:
            kind = "operator" if following.text == "(" else "name"
            raise self.error(f"unknown {kind} {tok.text!r}", tok, f"known: {', '.join(TERMINALS + UNARY + BINARY)}")
        if self.take().text != "(":
            raise self.error(f"expected '(' after {tok.text!r}", following)
        args: list[Expr] = []
        if self.tokens[self.i].text != ")":
            args.append(self.expr(depth + 1))
            while self.tokens[self.i].text == ",":
                self.take()
                args.append(self.expr(depth + 1))
        close = self.take()
        if close.text != ")":
            raise self.error(f"expected ')' or ',', got {_shown(close)}", close)
        arity = ARITY[tok.text]
        if len(args) != arity:
            raise self.error(f"{tok.text} takes {arity} argument{'s' * (arity > 1)}, got {len(args)}", tok)
        return Node(tok.text, tuple(args))


def parse(text: str) -> Expr:
    """Parse ``text`` such as ``mul(abs(W), X)``; raises ExpressionError on anything else."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    parser = _Parser(text)
    tree = parser.expr(0)
    end = parser.take()
    if end.kind != "end":
        raise parser.error(f"unexpected {end.text!r} after the end of the expression", end)
    return tree


def _fmt(value: float) -> str:
    return str(int(value)) if math.isfinite(value) and value == int(value) and abs(value) < 1e15 else repr(value)


def to_string(e: Expr) -> str:
    """The one compact text form: no spaces, integral constants without a decimal point."""
    if isinstance(e, Terminal):
        return e.name
    if isinstance(e, Const):
        return _fmt(e.value)
    return f"{e.op}({','.join(to_string(a) for a in e.args)})"


def height(e: Expr) -> int:
    return 1 + max(height(a) for a in e.args) if isinstance(e, Node) else 0


def size(e: Expr) -> int:
    return 1 + sum(size(a) for a in e.args) if isinstance(e, Node) else 1


def terminals(e: Expr) -> set[str]:
    if isinstance(e, Terminal):
        return {e.name}
    return set().union(*(terminals(a) for a in e.args)) if isinstance(e, Node) else set()


def uses_gradient(e: Expr) -> bool:
    """Whether scoring needs backward passes during calibration."""
    return "G" in terminals(e)
