"""Smoke test of ``prunehive bench``: the eval suite runs through the CLI and prints its JSON keys.

No timing is asserted; the numbers only mean something on a quiet machine (see tests/benchmarks/README.md).
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from prunehive.platform.cli import app


def test_eval_suite_json_has_its_keys() -> None:
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--suite",
            "eval",
            "--task",
            "digits-mlp",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--min-seconds",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["suite"] == "eval"
    assert set(obj["eval_ratio"]) == {"digits-mlp"}
    (row,) = obj["tasks"]
    assert {"task", "eval_seconds", "bare_seconds", "ratio", "ratio_paired", "goal"} <= set(row)
    assert row["eval_seconds"] > 0 and row["bare_seconds"] > 0


def test_unknown_suite_is_one_line_error() -> None:
    result = CliRunner().invoke(app, ["bench", "--suite", "nope"])
    assert result.exit_code == 2
    assert "unknown suite 'nope'" in result.output
