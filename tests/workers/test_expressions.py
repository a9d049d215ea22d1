"""Formula metrics: known answers, the same masks as the built-in metrics, and the numerical guards."""

from __future__ import annotations

import pytest
import torch

from prunehive.search.expr_syntax import ExpressionError, parse
from prunehive.workers.calibration import LayerStats
from prunehive.workers.engine import PruningEngine
from prunehive.workers.expressions import ExpressionMetric, MetricValueError, compile_expression, expression_metric
from prunehive.workers.metrics import get_metric, needs_gradients
from prunehive.workers.tasks.digits import DigitsMLP


class TinyMLP(DigitsMLP):
    train_steps = 100


@pytest.fixture()
def stats() -> LayerStats:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4, generator=g)
    x = LayerStats.broadcast_x(torch.rand(4, generator=g) + 0.1, w)
    grad = torch.randn(6, 4, generator=g) * 1e-2
    return LayerStats(W=w, X=x, G=grad, F=grad.pow(2))


def test_known_answers(stats: LayerStats) -> None:
    w, x, g = stats.W, stats.X, stats.G
    assert torch.equal(expression_metric("mul(abs(W),X)")(stats), w.abs() * x)
    assert torch.equal(expression_metric("abs(mul(W,G))")(stats), (w * g).abs())
    assert torch.allclose(expression_metric("mul(sqr(W),minmax(G))")(stats), w**2 * (g - g.min()) / (g.max() - g.min()))
    assert torch.allclose(expression_metric("zscore(W)")(stats), (w - w.mean()) / w.std(correction=0), atol=1e-5)
    assert torch.allclose(expression_metric("add(W,0.5)")(stats), w + 0.5)
    assert torch.allclose(expression_metric("log(X)")(stats), torch.log(x + 1e-8))
    constant = expression_metric("2")(stats)
    assert constant.shape == w.shape and bool((constant == 2).all())  # constants fill W's shape


def test_the_metric_is_named_by_its_canonical_text(stats: LayerStats) -> None:
    metric = expression_metric("mul( X , abs(W) )")
    assert metric.expression == "mul(X,abs(W))" and metric.__name__ == "expr:mul(X,abs(W))"
    assert not metric.needs_gradients and expression_metric("abs(mul(W,G))").needs_gradients
    score = expression_metric("W")(stats)
    score.add_(1.0)  # a caller that writes into the scores must not corrupt the statistics
    assert not torch.equal(score, stats.W)


def test_canonical_and_written_forms_score_alike(stats: LayerStats) -> None:
    for text in ["exp(log(abs(W)))", "mul(mul(W,X),neg(neg(G)))", "sub(add(W,X),add(G,W))", "div(sqr(W),2)"]:
        written, canon = compile_expression(parse(text))(stats), expression_metric(text)(stats)
        assert torch.allclose(written, canon, rtol=1e-5, atol=1e-7), text


def test_guards_keep_division_by_zero_and_log_of_zero_finite(stats: LayerStats) -> None:
    """Guarded, not raised: |denominator| >= 1e-8 and log reads |x| + 1e-8."""
    assert torch.allclose(expression_metric("div(W,sub(W,W))")(stats), stats.W / 1e-8)
    assert torch.allclose(compile_expression(parse("div(W,sub(W,W))"))(stats), stats.W / 1e-8)
    log_zero = compile_expression(parse("log(sub(W,W))"))(stats)
    assert bool(torch.isfinite(log_zero).all()) and torch.allclose(log_zero, torch.full_like(stats.W, -18.420681))
    assert bool(torch.isfinite(expression_metric("exp(exp(exp(W)))")(stats)).all())  # exp is clamped at 30


def test_non_finite_or_misshapen_scores_raise(stats: LayerStats) -> None:
    with pytest.raises(MetricValueError, match="NaN or infinite"):
        expression_metric("sqr(sqr(exp(mul(1000,W))))")(stats)  # e^30 squared twice overflows float32
    broken = LayerStats(W=stats.W.clone(), X=stats.X, G=stats.G.clone(), F=stats.F)
    broken.G[0, 0] = float("nan")
    with pytest.raises(MetricValueError):
        expression_metric("abs(mul(W,G))")(broken)
    expression_metric("mul(abs(W),X)")(broken)  # a formula that does not read G is unaffected
    odd = LayerStats(W=stats.W, X=torch.ones(3, 1), G=stats.G, F=stats.F)
    with pytest.raises(MetricValueError):
        expression_metric("mul(W,X)")(odd)


def test_get_metric_and_needs_gradients() -> None:
    assert isinstance(get_metric("expr:abs(W)"), ExpressionMetric)
    with pytest.raises(ExpressionError, match="position"):
        get_metric("expr:bogus(")
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("bogus")
    assert needs_gradients("snip") and needs_gradients("taylor") and not needs_gradients("wanda")
    assert needs_gradients("expr:abs(mul(W,G))") and not needs_gradients("expr:mul(abs(W),X)")
    assert not needs_gradients("expr:add(W,sub(G,G))")  # G cancels out: no backward passes


@pytest.fixture(scope="module")
def task() -> TinyMLP:
    return TinyMLP(seed=0)


@pytest.mark.parametrize(
    ("builtin", "formula"),
    [("wanda", "mul(abs(W),X)"), ("magnitude", "abs(W)"), ("snip", "abs(mul(W,G))")],
)
def test_formulas_prune_exactly_like_the_builtin_metrics(task: TinyMLP, builtin: str, formula: str) -> None:
    reference = PruningEngine(task, metric=builtin, calibration_batches=2)
    evolved = PruningEngine(task, metric=f"expr:{formula}", calibration_batches=2)
    for name in reference.names:
        assert torch.equal(reference.scores(name), evolved.scores(name)), name
        assert torch.equal(reference.rankings[name].rank, evolved.rankings[name].rank), name
    for sparsity in (0.3, 0.8):
        mine, theirs = evolved.masks([sparsity] * 5), reference.masks([sparsity] * 5)
        assert all(torch.equal(mine[n], theirs[n]) for n in reference.names)
    for engine in (reference, evolved):  # backward passes only when the metric reads G
        assert bool(engine.stats[engine.names[0]].G.abs().sum() > 0) == (builtin == "snip")
