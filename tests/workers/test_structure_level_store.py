"""The structured level database: the engine's consumer refits come from it bit for bit as least squares
fits them, a second engine on the node reads them without fitting, and another calibration, seed or
granularity gets a store of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from structured_tasks import TinyLlamaTask, tiny_llama

from prunehive.workers.structure import level_store
from prunehive.workers.structure.apply import down_keep, o_keep, plan_weights
from prunehive.workers.structure.engine import StructuredEngine
from prunehive.workers.structure.plan import StructurePlan
from prunehive.workers.structure.reconstruct import least_squares
from prunehive.workers.structure.stats import BlockStats, collect


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache: the first engine here fits the store, whatever other tests left on disk."""
    monkeypatch.setenv("PRUNEHIVE_CACHE", str(tmp_path))
    return tmp_path


@pytest.fixture()
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the store's least-squares fits (the real function still does the work)."""
    calls: list[int] = []
    real = level_store.least_squares

    def counted(*args: torch.Tensor, **kwargs: float) -> torch.Tensor:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(level_store, "least_squares", counted)
    return calls


def engine(task: TinyLlamaTask | None = None, batches: int = 2, granularity: str = "structured") -> StructuredEngine:
    return StructuredEngine(task or tiny_llama(), "magnitude", granularity, batches, "sparsegpt")


def vectors(e: StructuredEngine) -> Iterator[list[float]]:
    """Every slot at each of its partial levels, mixed levels, and whole sublayers removed."""
    for j in range(1, max(len(g) for g in e.grids)):
        yield [g[min(j, len(g) - 1)] for g in e.grids]
    yield [g[(i + 1) % len(g)] for i, g in enumerate(e.grids)]
    yield [g[-1] if i % 3 == 0 else g[len(g) // 2] for i, g in enumerate(e.grids)]


def fresh(e: StructuredEngine, plan: StructurePlan, grams: dict[int, BlockStats]) -> dict[str, torch.Tensor]:
    """The plan's weights with each consumer fitted now by least squares on the dense model's inputs."""
    modules = dict(e.model.named_modules())
    consumers = {}
    for b, p in zip(e.structure.blocks, plan.blocks, strict=True):
        for kind, units, keep, present in (
            ("o_proj", p.kv_groups, o_keep, p.attention),
            ("down_proj", p.channels, down_keep, p.mlp),
        ):
            gram = grams[b.index].o_gram if kind == "o_proj" else grams[b.index].down_gram
            if not p.removed and present and units is not None and gram is not None:
                weight = modules[b.proj(kind)].weight.detach()
                consumers[f"{b.proj(kind)}.weight"] = least_squares(weight, gram, keep(b, p))
    return plan_weights(e.model, e.structure, plan, consumers)


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].view(torch.int32), b[k].view(torch.int32)) for k in a)


def test_the_engines_fits_come_from_the_store_bit_for_bit(cache: Path) -> None:
    e = engine()
    store = e.level_store()
    assert store is not None and store.built_here
    info = store.describe()
    assert info is not None and info["layout"] == "dense" and info["bytes"] > 0
    assert info["layers"] == 6 and [Path(d["path"]).parent for d in info["databases"]] == [cache / "levels"] * 2
    grams, checked = collect(e.model, e.structure, e.pruner.calibration, grams=True), 0
    for vector in vectors(e):
        plan = e.plan_of(vector)
        got = e.weights(plan)
        assert same_bits(got, fresh(e, plan, grams))
        for b, p in zip(e.structure.blocks, plan.blocks, strict=True):
            if p.channels is not None and p.mlp and not p.removed:  # the mapping's own tensor, not a copy
                name = f"{b.proj('down_proj')}.weight"
                assert got[name] is store.fit(name, b.channels - len(p.channels))
                checked += 1
    assert checked >= 3


def test_a_plan_off_the_level_grid_is_fitted_as_least_squares_fits_it(cache: Path) -> None:
    e = engine()
    plan = e.plan_of([g[1] for g in e.grids])
    kept = plan.blocks[0].channels
    assert kept is not None and e.slots[1].kind == "mlp"
    least_important_kept = tuple(sorted(e.slots[1].order[: len(kept)]))  # the same width, other channels
    off = StructurePlan((replace(plan.blocks[0], channels=least_important_kept),) + plan.blocks[1:])
    assert same_bits(e.weights(off), fresh(e, off, collect(e.model, e.structure, e.pruner.calibration)))
    assert not same_bits(e.weights(off), e.weights(plan))


def test_a_second_engine_on_the_node_reads_the_store_without_fitting(cache: Path, fits: list[int]) -> None:
    first = engine()
    plans = [first.plan_of(v) for v in vectors(first)]
    built = [first.weights(p) for p in plans]
    assert first.level_store().built_here  # type: ignore[union-attr]
    assert len(fits) == sum(len(c.removed) for c in first._consumers.values())  # every level, once
    before = len(fits)
    second = engine()
    assert all(same_bits(second.weights(p), w) for p, w in zip(plans, built, strict=True))
    store = second.level_store()
    assert store is not None and not store.built_here
    assert len(fits) == before


def test_another_calibration_seed_or_granularity_gets_its_own_store(cache: Path) -> None:
    def paths(e: StructuredEngine) -> set[str]:
        store = e.level_store()
        assert store is not None and store.built_here
        info = store.describe()
        assert info is not None
        return {d["path"] for d in info["databases"]}

    base = paths(engine())
    assert paths(engine(batches=3)).isdisjoint(base)
    assert paths(engine(TinyLlamaTask(seed=1))).isdisjoint(base)
    assert paths(engine(granularity="head")).isdisjoint(base)


def test_block_granularity_and_plain_removal_store_nothing(cache: Path) -> None:
    store = engine(granularity="block").level_store()
    assert store is not None and store.describe() is None
    assert StructuredEngine(tiny_llama(), "magnitude", "structured", 2, "mask").level_store() is None
    assert not (cache / "levels").exists() or not any((cache / "levels").iterdir())


WORKER = """
import hashlib, json, sys
from prunehive.workers.structure.engine import StructuredEngine
from structured_tasks import tiny_llama

sys.stdin.readline()  # both workers wait here, then start together
e = StructuredEngine(tiny_llama(), "magnitude", "structured", 2, "sparsegpt")
store = e.level_store()
weights = e.weights(e.plan_of([g[1] for g in e.grids]))
digest = hashlib.sha256(b"".join(weights[k].numpy().tobytes() for k in sorted(weights))).hexdigest()
print(json.dumps({"built": store.built_here, "digest": digest}))
"""


@pytest.mark.slow  # two fresh interpreters importing torch; the lock itself is test_level_db.py's
def test_two_workers_starting_together_fit_the_store_once(cache: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    run = [sys.executable, "-c", WORKER]
    procs = [subprocess.Popen(run, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env) for _ in "ab"]
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    replies = [json.loads(proc.communicate(timeout=600)[0].strip().splitlines()[-1]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sorted(r["built"] for r in replies) == [False, True]
    assert replies[0]["digest"] == replies[1]["digest"]
