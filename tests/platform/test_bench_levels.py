"""``prunehive bench --suite eval --solver``: a level database's size and cost, compact against dense, in one run.

No timing is asserted (see tests/benchmarks/README.md); the sizes are exact and are.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from prunehive.platform.cli import app


def test_level_eval_reports_both_layouts_side_by_side() -> None:
    args = ["bench", "--suite", "eval", "--solver", "mask", "--task", "digits-mlp", "--repeats", "2"]
    result = CliRunner().invoke(app, [*args, "--warmup", "1", "--min-seconds", "0", "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["suite"] == "eval" and obj["solver"] == "mask"
    (row,) = obj["tasks"]
    assert row["levels"] == 20 and row["repeats"] == 2
    assert 0.95 < row["dense_level_over_model"] <= 1.0  # the layers' weights are nearly all of the model
    assert row["compact_level_over_model"] <= obj["goals"]["level_bytes_over_model"]
    assert obj["level_bytes_over_model"] == {"digits-mlp": row["compact_level_over_model"]}
    for layout in ("dense_db", "compact_db", "compact_uncached"):
        assert row[f"eval_seconds_{layout}"] > 0 and row[f"read_seconds_{layout}"] > 0
    assert row["bare_seconds"] > 0 and "uncached_read_share" in row
    assert obj["cost_ratio"]["digits-mlp"] == row["eval_seconds_compact_db"] / row["eval_seconds_dense_db"]


def test_a_solver_is_for_the_eval_suite_only() -> None:
    for args in (["--suite", "memory", "--solver", "mask"], ["--suite", "eval", "--solver", "nope"]):
        result = CliRunner().invoke(app, ["bench", *args])
        assert result.exit_code == 2
        assert "the eval suite takes one of mask, sparsegpt" in result.output
