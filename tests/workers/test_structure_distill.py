"""Healing a structured candidate by distillation: the KL to dense falls on held-out data, and the healed
model is still the candidate's smaller model (its removed units stay zero)."""

from __future__ import annotations

import torch
from structured_tasks import tiny_llama

from prunehive.platform.jobs.prune_structured import prune_structured
from prunehive.workers.contracts import EvalRequest
from prunehive.workers.kl import DenseReference
from prunehive.workers.structure.distill import heal, healed_result
from prunehive.workers.structure.engine import StructuredEngine
from prunehive.workers.structure.shrink import shrink
from prunehive.workers.structure.worker import StructuredEvalWorker


def _engine() -> tuple[StructuredEngine, list[float]]:
    engine = StructuredEngine(tiny_llama(), "magnitude", "structured", 2, "sparsegpt")
    engine.reference = DenseReference.build(engine.task, engine.model)
    vector = [s.grid[len(s.grid) // 2] for s in engine.slots]
    vector[-1] = 1.0  # the last MLP removed whole
    return engine, vector


def test_kl_distillation_lowers_held_out_kl() -> None:
    engine, vector = _engine()
    before = engine.evaluate(vector, splits=("validation", "test"))
    dense = {k: v.clone() for k, v in engine.model.state_dict().items()}
    after, lr = healed_result(engine, vector, steps=20, lr=3e-3, distill="kl")
    kl_before, kl_after = before.metrics["validation"].kl, after.metrics["validation"].kl
    assert kl_before is not None and kl_after is not None
    assert kl_after < 0.8 * kl_before, (kl_before, kl_after)
    assert after.metrics["test"].quality < before.metrics["test"].quality  # perplexity, on data never trained on
    assert (after.params, after.flops, lr) == (before.params, before.flops, 3e-3)
    assert all(torch.equal(dense[k], v) for k, v in engine.model.state_dict().items())  # dense untouched


def test_healed_model_keeps_removed_units_removed() -> None:
    """Under the task's own loss (``distill: none``) as under KL: the re-zeroing is the same."""
    engine, vector = _engine()
    plan = engine.plan_of(vector)
    weights, calibration = engine.weights(plan), engine.pruner.calibration
    healed = heal(engine.task, engine.model, engine.structure, plan, weights, calibration, 10, 3e-3, "none")
    params = dict(healed.model.named_parameters())
    assert any(not torch.equal(params[n], w) for n, w in weights.items())  # trained
    assert all(bool((params[n][w == 0] == 0).all()) for n, w in weights.items())
    x = engine.task.split("validation")[0][:8]
    with torch.no_grad():
        hooked = healed.model(x).logits
        smaller = shrink(healed.model, plan)(x).logits  # the physically smaller model: no zeroed units at all
    torch.testing.assert_close(hooked, smaller, atol=1e-4, rtol=1e-4)


def test_prune_recovery_steps_heals_the_pruned_model() -> None:
    """``prunehive prune --granularity structured --recovery-steps K``: metrics after healing, one-shot kept."""
    out = prune_structured("structured_tasks:tiny_llama", 0.3, granularity="structured", recovery_steps=5)
    recovery = out["recovery"]
    assert (recovery["steps"], recovery["distill"]) == (5, "kl") and recovery["lr"] > 0
    assert set(recovery["one_shot"]) == set(out["metrics"]) == {"validation", "test"}
    assert recovery["one_shot"]["test"] != out["metrics"]["test"]
    assert "recovery" not in prune_structured("structured_tasks:tiny_llama", 0.3, granularity="structured")


def test_training_aware_request_is_distilled_before_it_is_scored() -> None:
    """``search.train_steps``: a request with steps is scored after KL distillation (closer to dense than the
    same candidate one-shot); the worker's dense model stays as it was for the next request."""
    worker = StructuredEvalWorker("structured_tasks:tiny_llama", calibration_batches=2, fitness="kl")
    vector = [s.grid[len(s.grid) // 2] for s in worker.structured.slots]
    asks = [EvalRequest(i, vector, None, recovery_steps=steps) for i, steps in enumerate((0, 30, 0))]
    one_shot, trained, again = (reply.result for reply in worker.evaluate_batch(asks))
    assert one_shot is not None and trained is not None and again is not None
    kl = [r.metrics["validation"].kl or 0.0 for r in (one_shot, trained, again)]
    assert kl[1] < kl[0] and kl[2] == kl[0], kl
    assert (trained.params, trained.flops, trained.tokens) == (one_shot.params, one_shot.flops, one_shot.tokens)
