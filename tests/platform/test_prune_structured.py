"""``prunehive prune --granularity head|block|structured``: the JSON of every other granularity plus the
plan, the heatmap plot, and bad input as one line with exit code 2; searches refuse them in the spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.spec.pruning import PruningSpec
from prunehive.workers.structure.plan import StructurePlan

TASK = "structured_tasks:tiny_llama"  # tests/structured_tasks.py: a 3-block grouped-query Llama
runner = CliRunner()
PRUNE_KEYS = {
    *("task", "metric", "granularity", "allocation", "target_sparsity", "requested", "metrics", "achieved_sparsity"),
    *("layers", "params", "flops", "seconds", "dense_params", "dense_flops", "quality", "skipped_layers", "solver"),
    *("dense", "per_row", "rule", "plan"),
}


def prune(*args: str) -> dict[str, Any]:
    result = runner.invoke(app, ["prune", "--task", TASK, *args, "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


@pytest.mark.parametrize(
    ("granularity", "extra", "rule"),
    [
        ("head", ["--solver", "sparsegpt"], "whole KV groups (a key/value head with its query heads)"),
        ("block", [], "whole decoder blocks"),
        ("structured", ["--allocation", "global", "--metric", "taylor", "--solver", "sparsegpt"], "KV groups, MLP"),
    ],
)
def test_prune_json_for_decoder_units(granularity: str, extra: list[str], rule: str, tmp_path: Path) -> None:
    obj = prune("--granularity", granularity, "--sparsity", "0.3", *extra)
    assert set(obj) == PRUNE_KEYS
    assert obj["granularity"] == granularity and obj["rule"].startswith(rule) and obj["per_row"] is False
    assert 0.3 <= obj["achieved_sparsity"] < 0.7
    plan = StructurePlan.from_dict(obj["plan"])
    assert len(plan.blocks) == 3 and plan != StructurePlan.dense(3)
    assert obj["params"] < obj["dense_params"] and obj["flops"] < obj["dense_flops"]
    assert set(obj["metrics"]) == {"validation", "test"} and set(obj["dense"]["metrics"]) == {"validation", "test"}
    assert obj["dense"]["achieved_sparsity"] == 0.0 and obj["requested"] == obj["layers"]
    if granularity == "block":
        assert sum(b.removed for b in plan.blocks) == 1
        assert set(obj["layers"].values()) == {0.0, 1.0}


def test_prune_table_prints_the_plan_and_writes_the_plot(tmp_path: Path) -> None:
    png = tmp_path / "layers.png"
    result = runner.invoke(app, ["prune", "--task", TASK, "--granularity", "head", "--plot", str(png)])
    assert result.exit_code == 0, result.output[-3000:]
    assert "structure kept" in result.stdout and "KV groups kept" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--task", "digits-mlp", "--granularity", "head"],
            "granularity head: task 'digits-mlp' has no attention heads",
        ),
        (["--task", "structured_tasks:one_block_llama", "--granularity", "block"], "has a single decoder block"),
        (["--task", TASK, "--granularity", "head", "--sparsity", "0.9"], "sparsity 0.9 removes more than head"),
        (["--task", TASK, "--granularity", "structured", "--metric", "wanda"], "metric 'wanda' does not score"),
        (["--task", TASK, "--granularity", "block", "--allocation", "erk"], "allocation 'erk' is not one of"),
        (["--task", TASK, "--granularity", "head", "--budget", "flops"], "budget 'flops': granularity head"),
    ],
)
def test_bad_structured_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["prune", *args])
    assert result.exit_code == 2, result.output[-3000:]
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_spec_accepts_the_new_granularities_and_searches_refuse_them() -> None:
    for granularity in ("head", "block", "structured"):
        assert PruningSpec(granularity=granularity).granularity == granularity
    with pytest.raises(ValueError, match="pruning.granularity: head is searched by kind search with strategy"):
        search = {"strategy": "nsga2"}
        parse_spec({"kind": "search", "task": "code-lm", "pruning": {"granularity": "head"}, "search": search})
    with pytest.raises(ValueError, match="unknown granularity 'heads'"):
        PruningSpec(granularity="heads")
