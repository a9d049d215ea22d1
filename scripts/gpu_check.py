"""Exercise each CUDA path once and print one line per path: ``ok: ...``, ``error: ...`` or ``skipped: ...``.

The paths: a ``task: {hf: ...}`` Llama loaded in ``dtype: bfloat16`` on the GPU and evaluated (``dtype``);
a small search job whose workers ask ``resources.gpus_per_worker: 1`` on a local Ray, its worker's
device checked (``gpus_per_worker``); a 2:4 candidate timed on torch's semi-structured sparse kernel
(``semi_structured_2of4``, ``workers/latency.py``); SparseGPT on CUDA tensors against the same layer on
the CPU, then a level database built and read on the GPU (``sparsegpt``). Each check runs in its own
process (a CUDA error cannot leak into the next) under a time limit, and the whole run stays under five
minutes. ``scripts/gpu-check.sh`` runs it with the project's ``.venv``. Each check imports the rest of
prunehive (and Ray) itself, in its own process: the run reaches the CUDA check whatever else is broken, and
a failing import is that check's error line.

Without a CUDA device every path is skipped (exit 0), unless ``nvidia-smi`` lists a GPU that torch
cannot use (a CPU-only torch build: exit 1). ``--cpu`` runs every check on the CPU instead (the 2:4 path
then takes the dense kernel, as workers do there), which is how the script itself is tested.
Exit code: 0 when every path is ok or skipped for want of a device, 1 otherwise.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.sparse import SparseSemiStructuredTensor

CHECKS = ("dtype", "gpus_per_worker", "semi_structured_2of4", "sparsegpt")
LIMITS = {"dtype": 60, "gpus_per_worker": 150, "semi_structured_2of4": 60, "sparsegpt": 90}  # seconds each
TOTAL_SECONDS = 280  # all checks together, under the five minutes
CPU_SLACK = 4  # --cpu: limits times this (a test of the script on a CPU that may be slow and shared)
# Shapes torch's semi-structured kernels take (rows and columns multiples of 64), small enough for seconds.
LLAMA = {
    "vocab_size": 256,
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}
TOKENS = {"calibration": 1024, "validation": 256, "test": 256}


def llama_task(root: Path, dtype: str = "float32") -> str:
    """A small random-weight Llama task mapping (JSON) with its files under ``root``."""
    from prunehive.bench.level_tasks import write_llama  # local: must not fail before CUDA is checked

    root.mkdir(parents=True, exist_ok=True)
    return write_llama(root, "gpu-check-llama", LLAMA, TOKENS, dtype)


def check_dtype(device: str, root: Path) -> str:
    from prunehive.workers.engine import PruningEngine  # local: must not fail before CUDA is checked
    from prunehive.workers.tasks import load_task  # local: must not fail before CUDA is checked

    engine = PruningEngine(load_task(llama_task(root, "bfloat16")), calibration_batches=1, device=device)
    dtypes = {p.dtype for p in engine.model.parameters()}
    devices = {p.device.type for p in engine.model.parameters()}
    if dtypes != {torch.bfloat16} or devices != {device}:
        raise RuntimeError(f"parameters are {sorted(map(str, dtypes))} on {sorted(devices)}")
    loss = engine.evaluate([0.5] * len(engine.names)).metrics["validation"].loss
    if not math.isfinite(loss):
        raise RuntimeError(f"validation loss {loss} at 50%")
    return f"model in bfloat16 on {_name(device)}, validation loss {loss:.3f} at 50%"


def check_gpus_per_worker(device: str, root: Path) -> str:
    import ray  # local: must not fail before CUDA is checked

    from prunehive.platform.jobs.base import start_job  # local: must not fail before CUDA is checked
    from prunehive.platform.jobs.cluster import connect_ray  # local: must not fail before CUDA is checked

    # local: must not fail before CUDA is checked
    from prunehive.platform.jobs.search.driver import SearchRun, make_pool
    from prunehive.platform.settings import default_database_url  # local: must not fail before CUDA is checked
    from prunehive.platform.spec.job import parse_spec  # local: must not fail before CUDA is checked
    from prunehive.platform.store.jobs import JobStore  # local: must not fail before CUDA is checked

    spec = parse_spec(
        {
            "kind": "search",
            "task": "digits-mlp",
            "pruning": {"sparsity": 0.7, "metric": "magnitude"},
            "search": {"strategy": "random", "budget": 8, "seed": 0},
            "resources": {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1 if device == "cuda" else 0},
        }
    )
    store = JobStore(default_database_url())
    job_id = start_job(store, spec)
    connect_ray(num_cpus=2)
    pool = make_pool(spec)
    try:
        SearchRun(store, job_id, show_progress=False, pool=pool).run()
        worker = pool.call_one("describe")
    finally:
        pool.shutdown()
        ray.shutdown()
    if not str(worker.device).startswith(device):
        raise RuntimeError(f"the worker ran on {worker.device}, not {device}")
    status = store.get_job(job_id).status
    if status != "succeeded":
        raise RuntimeError(f"job {job_id} {status}")
    return f"job {job_id} {status} with {len(store.history(job_id))} trials, its worker on {worker.device}"


def check_semi_structured(device: str, root: Path) -> str:
    from prunehive.workers.contracts import LatencyRequest  # local: must not fail before CUDA is checked
    from prunehive.workers.engine import PruningEngine  # local: must not fail before CUDA is checked
    from prunehive.workers.latency import LatencyMeter, deployable  # local: must not fail before CUDA is checked
    from prunehive.workers.tasks import load_task  # local: must not fail before CUDA is checked

    engine = PruningEngine(load_task(llama_task(root)), granularity="2:4", calibration_batches=1, device=device)
    vector = [0.5] * len(engine.names)
    model, kernel = deployable(engine, vector)
    expected = "semi-structured" if device == "cuda" else "dense"
    if kernel != expected:
        raise RuntimeError(f"kernel {kernel!r}, expected {expected!r}")
    sparse = sum(isinstance(m.weight, SparseSemiStructuredTensor) for m in model.modules() if hasattr(m, "weight"))
    if device == "cuda" and sparse == 0:
        raise RuntimeError("no Linear layer took a semi-structured sparse weight")
    timing = LatencyMeter(engine, LatencyRequest(batch=8, repeats=5, warmup=1)).measure(vector)
    return (
        f"kernel {timing.kernel}, {sparse} sparse Linear layers, {timing.latency_ms:.3f} ms "
        f"vs dense {timing.dense_ms:.3f} ms (speedup {timing.speedup:.2f}x)"
    )


def check_sparsegpt(device: str, root: Path) -> str:
    from prunehive.workers.engine import PruningEngine  # local: must not fail before CUDA is checked
    from prunehive.workers.masks import Granularity  # local: must not fail before CUDA is checked

    # local: must not fail before CUDA is checked
    from prunehive.workers.solvers.level_engine import LevelEngine, open_database
    from prunehive.workers.solvers.sparsegpt import ObsLayer  # local: must not fail before CUDA is checked
    from prunehive.workers.tasks import load_task  # local: must not fail before CUDA is checked

    torch.manual_seed(0)
    w, x = torch.randn(256, 512), torch.randn(2048, 512)
    x[:, ::16] = 0.0  # dead inputs too
    h = x.T @ x / len(x)
    agree = []
    for granularity in ("unstructured", "2:4"):
        g = Granularity.parse(granularity)
        ref = ObsLayer(w, h).prune(0.5, g)
        got = ObsLayer(w.to(device), h.to(device)).prune(0.5, g)
        if got.device.type != device:
            raise RuntimeError(f"pruned weight came back on {got.device}")
        agree.append(float(((got.cpu() == 0) == (ref == 0)).float().mean()))
    if min(agree) < 0.99:
        raise RuntimeError(f"masks agree with the CPU's on only {min(agree):.2%}")
    engine = PruningEngine(load_task(llama_task(root)), calibration_batches=1, device=device)
    db = open_database(engine, "sparsegpt", levels=[0.0, 0.5], calibration_batches=1)
    loss = LevelEngine(engine, db).evaluate(levels=[1] * len(engine.names)).metrics["validation"].loss
    if not math.isfinite(loss):
        raise RuntimeError(f"validation loss {loss} from the level database")
    return (
        f"masks agree with the CPU's on {agree[0]:.4%} (50%) and {agree[1]:.4%} (2:4); level database on "
        f"{_name(device)}: validation loss {loss:.3f} at 50%"
    )


def _name(device: str) -> str:
    return torch.cuda.get_device_name(0) if device == "cuda" else "cpu"


RUN: dict[str, Callable[[str, Path], str]] = {
    "dtype": check_dtype,
    "gpus_per_worker": check_gpus_per_worker,
    "semi_structured_2of4": check_semi_structured,
    "sparsegpt": check_sparsegpt,
}


def no_cuda_reason() -> tuple[str, bool] | None:
    """Why CUDA cannot be used here, and whether that is an error (a GPU is present); None when it can."""
    if torch.cuda.is_available():
        return None
    gpus = _listed_gpus()
    if gpus:
        return f"torch {torch.__version__} cannot use {gpus[0]} (install a CUDA build of torch into .venv)", True
    return "no CUDA device", False


def _listed_gpus() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.startswith("GPU")]


def run_one(name: str, device: str, root: Path) -> int:
    """One check in this process: its line's text on stdout (last line), exit 0 or 1."""
    try:
        print(f"ok: {RUN[name](device, root)}", flush=True)
        return 0
    except Exception as exc:  # noqa: BLE001 - the check's whole point is to report any failure as one line
        message = " ".join(str(exc).split())[:300]
        print(f"error: {type(exc).__name__}: {message}", flush=True)
        return 1


def run_all(device: str, checks: list[str]) -> int:
    """Each check in a child process under its limit, one line each; 0 when all are ok."""
    slack = CPU_SLACK if device == "cpu" else 1
    deadline = time.monotonic() + TOTAL_SECONDS * slack
    failed = 0
    with tempfile.TemporaryDirectory(prefix="prunehive-gpu-check-") as tmp:
        env = {**os.environ, "PRUNEHIVE_HOME": f"{tmp}/home", "PRUNEHIVE_CACHE": f"{tmp}/cache"}
        for name in ("MLFLOW_TRACKING_URI", "PRUNEHIVE_DATABASE_URL", "RAY_ADDRESS"):
            env.pop(name, None)
        for name in checks:
            limit = min(LIMITS[name] * slack, deadline - time.monotonic())
            if limit < 5:
                line = "error: not run, the five minutes are spent"
            else:
                cmd = [sys.executable, __file__, "--only", name, "--root", f"{tmp}/{name}"]
                line = _child(cmd + (["--cpu"] if device == "cpu" else []), env, limit)
            failed += not line.startswith("ok")
            print(f"{name}: {line}", flush=True)
    return 1 if failed else 0


def _child(cmd: list[str], env: dict[str, str], limit: float) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        return f"error: no answer within {limit:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.startswith(("ok: ", "error: "))]
    if lines:
        return lines[-1]
    tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
    return f"error: exit {done.returncode}: {tail[0][:300]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="run every check on the CPU (tests the script)")
    parser.add_argument("--only", choices=CHECKS, help="run this check alone, in this process")
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda":
        reason = no_cuda_reason()
        if reason is not None:
            text, is_error = reason
            for name in [args.only] if args.only else CHECKS:
                print(f"{name}: {'error' if is_error else 'skipped'}: {text}")
            return 1 if is_error else 0
    if args.only and args.root:
        return run_one(args.only, device, args.root)
    if args.only:
        with tempfile.TemporaryDirectory(prefix="prunehive-gpu-check-") as tmp:
            return run_one(args.only, device, Path(tmp))
    return run_all(device, list(CHECKS))


if __name__ == "__main__":
    sys.exit(main())
