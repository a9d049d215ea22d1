"""The latency module on real models: paired timing, the model each granularity deploys, honest speedups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunehive.platform.jobs.search.trials import LATENCY_PENALTY, objective_values
from prunehive.platform.jobs.structured_search import TABLE_TOLERANCE, penalty_budget
from prunehive.platform.spec.job import JobSpec, parse_spec
from prunehive.workers.contracts import EvalResult, LatencyRequest, SplitMetrics
from prunehive.workers.engine import PruningEngine
from prunehive.workers.latency import LatencyMeter, batch_of, deployable, paired_ms
from prunehive.workers.tasks.digits import DigitsCNN


class QuickCNN(DigitsCNN):
    train_steps = 100


@pytest.fixture(scope="module")
def cnn() -> QuickCNN:
    return QuickCNN(seed=0)


def result(objective: float = 0.9, speedup: float | None = None) -> EvalResult:
    metrics = {"validation": SplitMetrics("accuracy", objective, 0.3, objective)}
    latency = None if speedup is None else 1.0 / speedup
    return EvalResult(metrics, 0.5, {"fc1": 0.5}, 100, 1000, 0.01, latency_ms=latency, speedup=speedup)


def test_batch_of_cycles_the_example_rows() -> None:
    example = torch.arange(6.0).reshape(2, 3)
    out = batch_of(example, 5)
    assert out.shape == (5, 3)
    assert torch.equal(out[2], example[0]) and torch.equal(out[3], example[1])


def test_paired_timing_tells_a_big_model_from_a_small_one() -> None:
    torch.manual_seed(0)
    big, small = nn.Linear(1024, 1024), nn.Linear(1024, 8)
    dense_ms, pruned_ms = paired_ms(big, small, torch.randn(64, 1024), repeats=7, warmup=1)
    assert dense_ms > 2 * pruned_ms > 0


def test_paired_timing_rejects_no_repeats() -> None:
    with pytest.raises(ValueError, match="repeats >= 1"):
        paired_ms(nn.Linear(2, 2), nn.Linear(2, 2), torch.randn(1, 2), repeats=0)


def test_channel_candidates_run_the_physically_smaller_model(cnn: QuickCNN) -> None:
    engine = PruningEngine(cnn, granularity="channel")
    model, kernel = deployable(engine, [0.5] * len(engine.names))
    assert kernel == "channel"
    assert sum(p.numel() for p in model.parameters()) < 0.6 * sum(p.numel() for p in engine.model.parameters())
    timing = LatencyMeter(engine, LatencyRequest(batch=4, repeats=5, warmup=1)).measure([0.5] * len(engine.names))
    assert timing.kernel == "channel" and timing.latency_ms > 0 and timing.dense_ms > 0
    assert timing.speedup == pytest.approx(timing.dense_ms / timing.latency_ms)


def test_unstructured_runs_the_dense_kernel_and_reports_no_speedup(cnn: QuickCNN) -> None:
    engine = PruningEngine(cnn, granularity="unstructured")
    model, kernel = deployable(engine, [0.7] * len(engine.names))
    assert kernel == "dense"
    conv1 = dict(model.named_modules())["conv1"]
    assert not hasattr(conv1, "weight_mask") and float((conv1.weight == 0).float().mean()) > 0.6  # zeros, no hooks
    meter = LatencyMeter(engine, LatencyRequest(batch=2, repeats=3, warmup=0))
    timed = meter.attach(engine.evaluate([0.7] * len(engine.names)), [0.7] * len(engine.names))
    assert timed.speedup == 1.0 and timed.latency_ms is not None and timed.latency_ms > 0
    assert torch.equal(engine.model.conv1.weight, engine.dense["conv1"])  # the dense model is untouched


def test_results_carry_latency_only_when_measured() -> None:
    plain = result()
    assert "latency_ms" not in plain.to_dict() and "speedup" not in plain.entry()
    timed = result(speedup=2.0)
    assert timed.to_dict()["latency_ms"] == 0.5 and timed.entry()["speedup"] == 2.0
    assert EvalResult.from_dict(timed.to_dict()) == timed
    assert EvalResult.from_dict(plain.to_dict()) == plain


def test_latency_objective_and_budget_penalty() -> None:
    assert objective_values(["quality", "latency"], result(speedup=1.8), 1000) == (0.9, 1.8)
    within = objective_values(["quality"], result(0.8, speedup=2.5), 1000, latency_budget=0.5)
    over = objective_values(["quality"], result(0.9, speedup=1.6), 1000, latency_budget=0.5)
    assert within == (0.8,)
    assert over[0] == pytest.approx(0.9 - LATENCY_PENALTY * (1 / 1.6 - 0.5))
    assert over < within  # a faster-enough candidate beats a better but too slow one
    with pytest.raises(ValueError, match="measured speedup"):
        objective_values(["quality", "latency"], result(), 1000)


def test_a_structured_trial_timed_just_over_its_budget_is_not_penalised() -> None:
    """A structured search holds its budget on the lookup table; one whole-model timing over it by less than
    ``TABLE_TOLERANCE`` is timing noise, not a slower model. Without a table (channel) the budget is exact."""

    def spec(granularity: str) -> JobSpec:
        pruning = {"granularity": granularity, "sparsity": 0.0 if granularity == "structured" else 0.5}
        pruning["latency_budget"] = 0.5
        return parse_spec({"kind": "search", "task": "code-lm", "pruning": pruning, "search": {"strategy": "evopress"}})

    structured, channel = spec("structured"), spec("channel")
    assert penalty_budget(structured) == pytest.approx(0.5 * (1 + TABLE_TOLERANCE))
    noisy = result(0.8, speedup=1 / (0.5 * (1 + TABLE_TOLERANCE / 2)))
    assert objective_values(["quality"], noisy, 1000, penalty_budget(structured)) == (0.8,)
    assert objective_values(["quality"], noisy, 1000, penalty_budget(channel))[0] < 0.8
    slow = result(0.8, speedup=1 / (0.5 * (1 + 2 * TABLE_TOLERANCE)))
    assert objective_values(["quality"], slow, 1000, penalty_budget(structured))[0] < 0.8
