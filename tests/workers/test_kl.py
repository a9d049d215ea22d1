"""Evaluation on a split's prefix (search fidelity) and the KL fitness against the dense model's outputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hf_models import causal_lm

from prunehive.workers.engine import PruningEngine
from prunehive.workers.kl import DenseReference, score_splits
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.base import Task
from prunehive.workers.tasks.digits import DigitsMLP


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory, data = causal_lm(tmp_path_factory.mktemp("llama"), "llama")
    small = {"calibration": 1024, "validation": 512, "test": 512}
    return {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": small}


def lm_task(spec: dict[str, Any]) -> Task:
    """The tiny Llama with four 16-token rows per evaluation batch, so a limit cuts inside batches and rows."""
    task = load_task(spec)
    task.eval_batch_tokens = 64  # type: ignore[attr-defined]
    return task


class Counting(torch.nn.Module):
    """Wraps a model and counts the rows it is run on (what an evaluation really consumed)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, x: torch.Tensor) -> Any:
        self.rows += len(x)
        return self.inner(x)


def test_a_limit_scores_exactly_that_many_digits() -> None:
    task = DigitsMLP()
    task.eval_batch_size = 64
    model = Counting(task.model())
    full = task.evaluate(model, "validation")
    assert full.count == len(task.split("validation")[1])
    model.rows = 0
    part = task.evaluate(model, "validation", limit=100)
    assert part.count == 100 and model.rows == 100  # one batch of 64 and 36 rows of the next
    assert task.evaluate(model, "validation", limit=10**9).count == full.count  # a short split is all there is
    x, y = task.split("validation")
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(task.model()(x[:100]), y[:100])
    assert part.loss == pytest.approx(float(expected), rel=1e-5)


def test_a_limit_scores_exactly_that_many_tokens(llama: dict[str, Any]) -> None:
    task = lm_task(llama)
    model = Counting(task.model())
    total = task.evaluate(model, "validation").count
    assert total == 512
    model.rows = 0
    ev = task.evaluate(model, "validation", limit=100)  # 6 full rows and 4 positions of a 7th
    assert ev.count == 100 and model.rows == 7
    assert task.evaluate(model, "validation", limit=100).loss == ev.loss  # the same prefix every time
    assert ev.loss != pytest.approx(task.evaluate(model, "validation", limit=96).loss, rel=1e-9)


def test_kl_of_the_dense_model_is_zero_and_grows_with_sparsity() -> None:
    task = DigitsMLP()
    engine = PruningEngine(task, "magnitude")
    engine.reference = DenseReference.build(task, engine.model)
    assert engine.reference.full  # ten classes: full log-probabilities
    dense = engine.evaluate([0.0] * len(engine.names)).metrics["validation"]
    assert dense.kl == pytest.approx(0.0, abs=1e-6) and dense.count == len(task.split("validation")[1])
    kls = [engine.evaluate([s] * len(engine.names), limit=200).metrics["validation"] for s in (0.3, 0.6, 0.9)]
    assert all(m.count == 200 for m in kls)
    values = [m.kl or 0.0 for m in kls]
    assert 0.0 < values[0] < values[1] < values[2]
    assert "kl" in kls[0].to_dict() and "kl" not in engine.evaluate([0.5] * len(engine.names)).to_dict()["metrics"]


def test_top_k_kl_approximates_the_full_kl(llama: dict[str, Any]) -> None:
    task = lm_task(llama)
    model = task.model()
    task.train(model, 100, lr=3e-3)  # an untrained model's near-uniform outputs barely change when pruned
    full = DenseReference.build(task, model)
    top = DenseReference.build(task, model, top_k=32, memory_cap=0)
    assert full.full and not top.full
    assert top.nbytes == 512 * 32 * (4 + 4)  # a value and an int32 id per kept token
    engine = PruningEngine(task, "magnitude")
    for sparsity in (0.3, 0.6):
        with engine.pruned([sparsity] * len(engine.names)) as pruned:
            exact = score_splits(task, pruned, ("validation",), reference=full)["validation"].kl or 0.0
            approx = score_splits(task, pruned, ("validation",), limit=300, reference=top)["validation"]
            whole = score_splits(task, pruned, ("validation",), reference=top)["validation"].kl or 0.0
        assert exact > 1e-3 and approx.count == 300 and approx.kl is not None and approx.kl > 0
        assert whole <= exact + 1e-6  # the coarsened KL never exceeds the full one
        assert whole == pytest.approx(exact, rel=0.02)


def test_a_cap_reached_midway_turns_the_kept_batches_to_top_k(llama: dict[str, Any]) -> None:
    task = lm_task(llama)
    vocab = task.model().config.vocab_size
    ref = DenseReference.build(task, task.model(), top_k=16, memory_cap=3 * 64 * vocab * 4)  # three batches
    assert not ref.full and all(e.index is not None for e in ref.entries) and len(ref.entries) == 8
