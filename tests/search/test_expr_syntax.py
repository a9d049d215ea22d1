"""The metric expression language: parsing, printing, limits, hostile input and the canonical form."""

from __future__ import annotations

import random

import pytest

from prunehive.search.expr_canonical import canonical, canonicalize
from prunehive.search.expr_syntax import (
    ARITY,
    BINARY,
    MAX_DEPTH,
    UNARY,
    Const,
    Expr,
    ExpressionError,
    Node,
    Terminal,
    height,
    parse,
    to_string,
    uses_gradient,
)


def random_tree(r: random.Random, depth: int) -> Expr:
    """Any tree of the language, constants included, for property checks."""
    if depth == 0 or r.random() < 0.25:
        return r.choice([Terminal("W"), Terminal("X"), Terminal("G"), Const(r.choice([0.0, 0.5, 1.0, 2.0, -1.0, 3.0]))])
    op = r.choice(UNARY + BINARY + BINARY)
    return Node(op, tuple(random_tree(r, depth - 1) for _ in range(ARITY[op])))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mul(abs(W), X)", "mul(abs(W),X)"),
        ("  add( W ,\tneg(G) ) ", "add(W,neg(G))"),
        ("div(W, 2.0)", "div(W,2)"),
        ("add(W, -0.5)", "add(W,-0.5)"),
        ("mul(1e-05, X)", "mul(1e-05,X)"),
        ("minmax(zscore(tanh(exp(log(sqrt(sqr(sub(W, X))))))))", "minmax(zscore(tanh(exp(log(sqrt(sqr(sub(W,X))))))))"),
    ],
)
def test_parse_and_print_round_trip(text: str, expected: str) -> None:
    tree = parse(text)
    assert to_string(tree) == expected
    assert parse(expected) == tree


def test_ast_shape() -> None:
    assert parse("mul(abs(W),0.5)") == Node("mul", (Node("abs", (Terminal("W"),)), Const(0.5)))
    assert uses_gradient(parse("abs(mul(W,G))")) and not uses_gradient(parse("mul(abs(W),X)"))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("mul(X,abs(W))", "mul(abs(W),X)"),
        ("add(W,0)", "W"),
        ("mul(W,1)", "W"),
        ("exp(log(abs(W)))", "abs(W)"),
        ("log(exp(X))", "X"),
        ("neg(neg(W))", "W"),
        ("abs(abs(W))", "abs(W)"),
        ("abs(sqr(W))", "sqr(W)"),
        ("sqrt(sqr(W))", "abs(W)"),
        ("sub(W,W)", "0"),
        ("div(W,W)", "1"),
        ("add(1,2)", "3"),
        ("mul(W,add(1,1))", "mul(2,W)"),
        ("add(W,W)", "mul(2,W)"),
        ("mul(W,W)", "sqr(W)"),
        ("mul(mul(W,X),G)", "mul(W,mul(X,G))"),
        ("mul(neg(W),X)", "neg(mul(W,X))"),
        ("neg(sub(W,X))", "sub(X,W)"),
        ("abs(sub(W,X))", "abs(sub(X,W))"),
        ("div(W,2)", "mul(0.5,W)"),
        ("minmax(add(mul(3,G),1))", "minmax(G)"),
        ("mul(sqr(W),minmax(G))", "mul(minmax(G),sqr(abs(W)))"),
        ("abs(mul(X,sqr(zscore(W))))", "mul(X,sqr(zscore(W)))"),  # X is a norm: the product is >= 0
        ("abs(mul(abs(X),sqr(W)))", "mul(X,sqr(W))"),
        ("abs(div(X,add(sqr(W),1)))", "div(X,add(1,sqr(W)))"),
        ("sqr(mul(2,W))", "mul(4,sqr(W))"),
        ("sqrt(mul(-4,W))", "mul(2,sqrt(W))"),
    ],
)
def test_equivalent_formulas_share_one_canonical_string(a: str, b: str) -> None:
    assert canonical(a) == canonical(b)


def test_constant_folding_uses_the_guarded_semantics() -> None:
    assert canonical("mul(2,sqr(3))") == "18"
    assert canonical("add(W,mul(2,sub(3,1)))") == "add(4,W)"
    assert canonical("div(1,0)") == "100000000"  # the denominator is kept at EPS = 1e-8 away from zero
    assert canonical("sqr(1e200)") == "sqr(1e+200)"  # an overflowing fold is left alone


def test_canonical_form_is_a_fixed_point_and_stays_within_limits() -> None:
    r = random.Random(0)
    for _ in range(1500):
        tree = random_tree(r, r.randint(1, 7))
        text = to_string(canonicalize(tree))
        assert canonical(text) == text, to_string(tree)
        assert height(parse(text)) <= height(tree) + 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os')", "unknown operator '__import__' at position 0"),
        ("W.__class__", "unexpected character '.' at position 1"),
        ("abs(W)[0]", "unexpected character '[' at position 6"),
        ('"abs"', "unexpected character '\"' at position 0"),
        ("lambda x: x", "unknown name 'lambda' at position 0"),
        ("mul(foo(W), X)", "unknown operator 'foo' at position 4 in 'mul(foo(W), X)'"),
        ("abs(W, X)", "abs takes 1 argument, got 2 at position 0"),
        ("W(1)", "'W' takes no arguments at position 1"),
        ("mul(W X)", "expected ')' or ',', got 'X' at position 6"),
        ("abs(W", "expected ')' or ',', got the end of the input at position 5"),
        ("abs(W))", "unexpected ')' after the end of the expression at position 6"),
        ("", "expected an expression, got the end of the input at position 0"),
        ("1e999", "constant '1e999' is out of range"),
        ("-W", "unexpected character '-' at position 0"),
        ("abs(" * 1000 + "W" + ")" * 1000, "the limit is 2000"),
        ("W" * 5000, "expression is 5000 characters long"),
        ("abs(" * (MAX_DEPTH + 1) + "W" + ")" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH} levels"),
        ("add(" * 40 + "W" + ",W)" * 40, "deeper than"),
        ("mul(" + ",".join(["add(W,X)"] * 70) + ")", "more than 200 nodes"),
    ],
)
def test_hostile_or_broken_text_is_rejected_with_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_depth_limit_is_exact() -> None:
    ok = "abs(" * MAX_DEPTH + "W" + ")" * MAX_DEPTH
    assert height(parse(ok)) == MAX_DEPTH
