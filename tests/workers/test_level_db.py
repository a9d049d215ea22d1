"""The level database: built once for workers starting together, read back exactly, swapped in and out."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from prunehive.workers.engine import PruningEngine
from prunehive.workers.solvers.level_db import DEFAULT_LEVELS
from prunehive.workers.solvers.level_engine import LevelEngine, open_database
from prunehive.workers.tasks.digits import DigitsMLP

WORKER = textwrap.dedent(
    """
    import hashlib, json, sys
    from prunehive.workers.engine import PruningEngine
    from prunehive.workers.solvers.level_engine import open_database
    from prunehive.workers.tasks.digits import DigitsMLP

    class Quick(DigitsMLP):
        train_steps = 100

    sys.stdin.readline()  # both workers wait here, then start together
    db = open_database(PruningEngine(Quick(seed=0)), "sparsegpt", calibration_batches=4)
    digests = {
        n: [hashlib.sha256(db.weight(n, i).numpy().tobytes()).hexdigest() for i in range(len(db.levels))]
        for n in db.layers
    }
    print(json.dumps({"built": db.built_here, "describe": db.describe(), "digests": digests}))
    """
)


class QuickMLP(DigitsMLP):
    train_steps = 100


@pytest.fixture(scope="module")
def engine() -> PruningEngine:
    return PruningEngine(QuickMLP(seed=0), metric="magnitude")


def test_two_workers_starting_together_build_it_once() -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:  # release both at once
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = []
    for proc in procs:
        stdout, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(o["built"] for o in outputs) == [False, True]
    assert outputs[0]["digests"] == outputs[1]["digests"]
    info = outputs[0]["describe"]
    assert info["levels"] == list(DEFAULT_LEVELS) and info["bytes"] > 0 and info["build_seconds"] > 0
    assert info["path"] == outputs[1]["describe"]["path"]


def test_sparsegpt_levels_swap_in_and_restore_exactly(engine: PruningEngine) -> None:
    db = open_database(engine, "sparsegpt", calibration_batches=4)
    assert open_database(engine, "sparsegpt", calibration_batches=4).built_here is False  # read from disk
    levels = LevelEngine(engine, db)
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    dense = engine.evaluate([0.0] * 5).metrics["validation"]
    at_zero = levels.evaluate(levels=[0] * 5).metrics["validation"]
    assert at_zero.loss == pytest.approx(dense.loss, abs=1e-6)
    result = levels.evaluate([0.71, 0.69, 0.7, 0.7, 0.52], splits=("validation", "test"))  # snapped to levels
    assert result.layers["fc1"] == pytest.approx(0.7, abs=0.01) and result.layers["fc5"] == pytest.approx(0.5, abs=0.01)
    assert result.params < engine.total_params and result.flops < engine.total_flops
    assert all(torch.equal(before[k], v) for k, v in engine.model.state_dict().items())
    masked = engine.evaluate(list(result.layers.values()), splits=("validation",))
    assert result.metrics["validation"].loss < masked.metrics["validation"].loss  # magnitude masks at the same sparsity
    with pytest.raises(ValueError, match="level indices"):
        levels.evaluate(levels=[0, 1, 2, 3, len(DEFAULT_LEVELS)])


def test_mask_levels_evaluate_as_the_engine_does(engine: PruningEngine) -> None:
    levels = LevelEngine(engine, open_database(engine, "mask", levels=[0.0, 0.5, 0.9]))
    vector = [0.5, 0.9, 0.9, 0.5, 0.0]
    mine, theirs = levels.evaluate(vector), engine.evaluate(vector)
    assert mine.metrics["validation"].loss == pytest.approx(theirs.metrics["validation"].loss, abs=1e-6)
    assert (mine.params, mine.flops, mine.layers) == (theirs.params, theirs.flops, theirs.layers)
    exported = levels.export(vector)
    assert float((dict(exported.named_modules())["fc2"].weight == 0).float().mean()) == pytest.approx(0.9, abs=1e-3)


def test_a_worker_with_the_sparsegpt_solver_evaluates_from_the_database() -> None:
    from prunehive.workers.actor import EvalWorker
    from prunehive.workers.contracts import EvalRequest

    worker = EvalWorker("digits-mlp", solver="sparsegpt", levels=[0.0, 0.5, 0.8], calibration_batches=4)
    info = worker.level_database()
    assert info is not None and info["levels"] == [0.0, 0.5, 0.8] and info["bytes"] > 0
    (reply,) = worker.evaluate_batch([EvalRequest(0, [0.8, 0.8, 0.8, 0.5, 0.49])])
    assert reply.result is not None, reply.error
    assert reply.result.layers["fc1"] == pytest.approx(0.8, abs=1e-3)
    assert reply.result.layers["fc5"] == pytest.approx(0.5, abs=1e-3)  # snapped to the nearest level
    assert EvalWorker("digits-mlp").level_database() is None
