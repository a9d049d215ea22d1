"""The ``tasks`` and ``prune`` commands: JSON contract, user tasks, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from prunehive.platform.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_stdlib_platform_is_not_shadowed_from_repo_root() -> None:
    assert not (ROOT / "platform" / "__init__.py").exists()
    proc = subprocess.run(
        [sys.executable, "-c", "import platform; print(platform.system())"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_tasks_json_lists_builtins() -> None:
    result = runner.invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0
    names = {t["name"] for t in json.loads(result.stdout)["tasks"]}
    assert {"digits-mlp", "digits-cnn", "code-lm"} <= names


def test_prune_json_has_the_contract_keys() -> None:
    result = runner.invoke(app, ["prune", "--task", "digits-mlp", "--sparsity", "0.8", "--allocation", "erk", "--json"])
    assert result.exit_code == 0, result.output
    obj = json.loads(result.stdout)
    assert obj["achieved_sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert set(obj["layers"]) == {"fc1", "fc2", "fc3", "fc4", "fc5"}
    assert {"validation", "test"} <= set(obj["metrics"])
    assert 0.0 <= obj["metrics"]["test"]["accuracy"] <= 1.0


def test_prune_table_and_nm_default_sparsity() -> None:
    result = runner.invoke(app, ["prune", "--task", "digits-mlp", "--granularity", "2:4", "--metric", "wanda"])
    assert result.exit_code == 0, result.output
    assert "achieved sparsity" in result.stdout and "0.5000" in result.stdout


def test_user_task_by_module_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    result = runner.invoke(app, ["prune", "--task", "examples.my_task:make_task", "--sparsity", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["test"]["accuracy"] > 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "nope"], "unknown task 'nope'"),
        (["--task", "digits-mlp", "--metric", "bogus"], "unknown metric 'bogus'"),
        (["--task", "digits-mlp", "--allocation", "bogus"], "unknown allocation 'bogus'"),
        (["--task", "digits-mlp", "--sparsity", "1.0"], "sparsity 1.0 is outside [0, 1)"),
        (["--task", "digits-mlp", "--sparsity", "-0.1"], "outside [0, 1)"),
        (["--task", "no_such_pkg.mod:factory"], "cannot import module 'no_such_pkg.mod'"),
        (["--task", "digits-mlp", "--granularity", "3-4"], "unknown granularity '3-4'"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prunehive.platform.cli", "prune", *args], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_prune_accepts_an_expression_metric() -> None:
    result = runner.invoke(
        app, ["prune", "--task", "digits-mlp", "--sparsity", "0.7", "--metric", "expr:mul(abs(W),X)", "--json"]
    )
    assert result.exit_code == 0, result.output
    wanda = runner.invoke(app, ["prune", "--task", "digits-mlp", "--sparsity", "0.7", "--metric", "wanda", "--json"])
    assert json.loads(result.stdout)["metrics"] == json.loads(wanda.stdout)["metrics"]


def test_malformed_expression_is_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prunehive.platform.cli", "prune", "--task", "digits-mlp", "--metric", "expr:abs(W"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "expected" in proc.stderr and "Traceback" not in proc.stderr


def test_prune_reports_the_rule_and_the_dense_model() -> None:
    """The effective per_row and rule are reported, and the dense entry scores at least the pruned model."""
    args = ["prune", "--task", "digits-mlp", "--sparsity", "0.9", "--metric", "wanda", "--json"]
    layer = json.loads(runner.invoke(app, args).stdout)
    row = json.loads(runner.invoke(app, [*args, "--per-row"]).stdout)
    assert layer["per_row"] is False and layer["rule"].startswith("layer-wide")
    assert row["per_row"] is True and row["rule"] == "per-row (Wanda paper)"
    assert layer["metrics"] != row["metrics"]  # the two rules are different masks
    assert layer["dense"] == row["dense"]  # and the same unpruned model
    dense = row["dense"]
    assert dense["achieved_sparsity"] == 0.0 and dense["params"] == row["dense_params"]
    assert set(dense["layers"]) == set(row["layers"]) and not any(dense["layers"].values())
    for split in ("validation", "test"):
        assert dense["metrics"][split]["accuracy"] > 0.9
        for pruned in (layer, row):
            assert dense["metrics"][split]["accuracy"] >= pruned["metrics"][split]["accuracy"]
    nm = runner.invoke(app, ["prune", "--task", "digits-mlp", "--granularity", "2:4", "--per-row", "--json"])
    assert json.loads(nm.stdout)["per_row"] is False  # N:M compares within groups of M whatever per_row says


def test_prune_table_shows_the_rule_and_the_dense_model() -> None:
    result = runner.invoke(
        app, ["prune", "--task", "digits-mlp", "--sparsity", "0.5", "--metric", "wanda", "--per-row"]
    )
    assert result.exit_code == 0, result.output
    assert "per-row (Wanda paper)" in result.stdout and "(dense 0.9" in result.stdout
