"""``scripts/gpu_check.py``: without a GPU every path says it is skipped; with ``--cpu`` each check runs
for real on the CPU (the 2:4 path on the dense kernel, as workers do there), so the script itself is tested."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from script_module import SCRIPTS, load_script

SCRIPT = SCRIPTS / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return load_script("gpu_check")


@pytest.mark.skipif(torch.cuda.is_available() or shutil.which("nvidia-smi") is not None, reason="a GPU is here")
def test_without_a_cuda_device_every_path_is_skipped() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{name}: skipped: no CUDA device" for name in ("dtype", "gpus_per_worker", "semi_structured_2of4", "sparsegpt")
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dtype", "ok: model in bfloat16 on cpu, validation loss"),
        ("semi_structured_2of4", "ok: kernel dense, 0 sparse Linear layers"),
        ("sparsegpt", "ok: masks agree with the CPU's on 100.0000% (50%) and 100.0000% (2:4); level database on cpu"),
    ],
)
def test_each_check_runs_on_the_cpu(
    gpu_check: ModuleType, name: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_check.run_one(name, "cpu", tmp_path) == 0
    assert capsys.readouterr().out.startswith(expected)


@pytest.mark.ray
def test_the_search_job_check_runs_on_the_cpu(
    gpu_check: ModuleType, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert gpu_check.run_one("gpus_per_worker", "cpu", tmp_path) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: job ") and "succeeded with 8 trials, its worker on cpu" in out


def test_checks_run_in_child_processes_and_report_one_line_each(
    gpu_check: ModuleType, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gpu_check.run_all("cpu", ["dtype"]) == 0
    assert capsys.readouterr().out.startswith("dtype: ok: model in bfloat16 on cpu")
    monkeypatch.setattr(gpu_check, "TOTAL_SECONDS", 0)
    assert gpu_check.run_all("cpu", ["dtype"]) == 1
    assert capsys.readouterr().out == "dtype: error: not run, the five minutes are spent\n"
