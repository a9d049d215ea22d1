"""The level database: built once for workers starting together, stored compact and read back exactly
(bit for bit against the dense layout), swapped in and out, its build reported on stderr."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open

from prunehive.workers.engine import PruningEngine
from prunehive.workers.solvers.build_progress import LayerProgress
from prunehive.workers.solvers.level_codec import canonical, decode, encode
from prunehive.workers.solvers.level_db import DEFAULT_LEVELS, FORMAT, LevelDatabase, levels_dir
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


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("granularity", ["unstructured", "2:4"])
def test_compact_levels_reproduce_the_dense_ones_bit_for_bit_in_fewer_bytes(granularity: str) -> None:
    engine = PruningEngine(QuickMLP(seed=0), metric="magnitude", granularity=granularity)
    levels = [0.0, 0.25, 0.5, 0.75] if granularity == "2:4" else [0.0, 0.3, 0.6, 0.9]
    dense = open_database(engine, "sparsegpt", levels=levels, calibration_batches=4, layout="dense")
    compact = open_database(engine, "sparsegpt", levels=levels, calibration_batches=4)
    assert (dense.layout, compact.layout) == ("dense", "compact") and dense.path != compact.path
    assert compact.nonzeros == dense.nonzeros
    for name in compact.layers:
        d_file = safe_open(str(dense.path / f"{name_file(dense, name)}"), framework="pt")
        c_file = safe_open(str(compact.path / f"{name_file(compact, name)}"), framework="pt")
        for i, level in enumerate(levels):
            stored = dense.weight(name, i)
            assert torch.equal(_bits(compact.weight(name, i)), _bits(canonical(stored)))
            assert torch.equal(compact.weight(name, i), stored)  # -0.0 == +0.0
            dense_bytes = d_file.get_tensor(f"level_{i}").nbytes
            compact_level = c_file.get_tensor(f"mask_{i}").nbytes + c_file.get_tensor(f"values_{i}").nbytes
            if level == 0.0 and compact.nonzeros[name][i] == stored.numel():
                assert compact_level == dense_bytes  # nothing pruned: no mask
            else:
                assert compact_level < dense_bytes * (1 - level + 1 / 32 + 1e-3)
                assert compact_level < dense_bytes
    assert compact.bytes < dense.bytes * (1 - sum(levels) / len(levels) + 1 / 32 + 0.01)


def name_file(db: LevelDatabase, layer: str) -> str:
    return str(json.loads((db.path / "meta.json").read_text())["files"][layer])


def test_decoding_is_exact_for_nan_negative_zero_and_bf16() -> None:
    w = torch.tensor([[1.5, -0.0, 0.0, float("nan")], [-2.0, 0.0, 3.0, 1e-30]])
    mask, values = encode(w)
    assert values.numel() == 5 and mask.numel() == 1
    assert torch.equal(_bits(decode(mask, values, w.shape)), _bits(canonical(w)))
    half = torch.randn(3, 16).to(torch.bfloat16) * (torch.rand(3, 16) > 0.5)
    got = decode(*encode(half), half.shape)
    assert got.dtype == torch.bfloat16 and torch.equal(got.view(torch.int16), canonical(half).view(torch.int16))
    full = torch.randn(4, 8)
    mask, values = encode(full)
    assert mask.numel() == 0 and torch.equal(decode(mask, values, full.shape), full)


def test_the_build_shows_layer_k_of_n_with_an_eta_on_stderr(
    engine: PruningEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    open_database(engine, "mask", levels=[0.0, 0.2, 0.4])
    lines = capsys.readouterr().err.splitlines()
    progress = [line for line in lines if "level database digits-mlp-mask: layer" in line]
    assert progress[0].startswith("level database digits-mlp-mask: layer 1/5 (fc1)") and "ETA" in progress[0]
    assert "layer 5/5 (fc5)" in progress[-1]
    assert any("5 layers x 3 levels" in line and "(compact)" in line for line in lines)
    open_database(engine, "mask", levels=[0.0, 0.2, 0.4])
    assert "layer" not in capsys.readouterr().err  # opened from disk: nothing to report


def test_progress_lines_are_throttled_off_a_terminal() -> None:
    stream = io.StringIO()
    progress = LayerProgress("build", 50, stream=stream, every=3600)
    for i in range(50):
        progress.step(f"l{i}")
    progress.finish("done")
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines[:2]] == ["build: layer 1/50", "build: layer 50/50"]
    assert lines[2].startswith("build: done in ") and len(lines) == 3


def test_older_formats_are_rebuilt_and_removed_and_stay_readable(engine: PruningEngine) -> None:
    old = open_database(engine, "mask", levels=[0.0, 0.7], layout="dense")
    stem = old.path.name.rsplit("-", 1)[0].removesuffix("-dense")
    legacy = levels_dir() / f"{stem}-{'0' * 16}"  # what format 1 wrote: dense levels, no format key
    shutil.copytree(old.path, legacy)
    meta = json.loads((legacy / "meta.json").read_text())
    for key in ("format", "layout", "shapes"):
        meta.pop(key)
    (legacy / "meta.json").write_text(json.dumps(meta))
    newer = levels_dir() / f"{stem}-{'f' * 16}"
    shutil.copytree(old.path, newer)
    (newer / "meta.json").write_text(json.dumps({**meta, "format": FORMAT + 1}))
    read = LevelDatabase.open(legacy)
    assert read.layout == "dense" and torch.equal(read.weight("fc2", 1), old.weight("fc2", 1))
    built = open_database(engine, "mask", levels=[0.0, 0.7, 0.8])  # a new compact database of the same name
    assert built.built_here and built.path.name.startswith(stem + "-")
    assert not legacy.exists() and newer.exists() and old.path.exists()


def test_decoded_levels_are_kept_up_to_the_cache_budget(engine: PruningEngine) -> None:
    built = open_database(engine, "mask", levels=[0.0, 0.5, 0.9])
    fc2 = 256 * 256 * 4  # bytes of one decoded fc2 level
    small = LevelDatabase.open(built.path, cache_bytes=fc2)
    first = small.weight("fc2", 1)
    assert small.weight("fc2", 1) is first  # kept
    small.weight("fc2", 2)  # evicts level 1: the budget holds one
    assert small.weight("fc2", 1) is not first and torch.equal(small.weight("fc2", 1), first)
    none = LevelDatabase.open(built.path, cache_bytes=0)
    assert none.weight("fc2", 1) is not none.weight("fc2", 1)
    assert none.weight("fc1", 0).data_ptr() == none.weight("fc1", 0).data_ptr()  # nothing pruned: the mapping itself
