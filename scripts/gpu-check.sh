#!/usr/bin/env bash
# Exercise each CUDA path once (models loaded in `dtype` on the GPU, `gpus_per_worker: 1`, the 2:4
# semi-structured latency path, SparseGPT on CUDA) and print one line per path: ok, the error, or
# skipped. Runs in the project's .venv, installed first with the README's command if it is missing.
# Exit 0: every path ok, or no CUDA device (each path says skipped); 1: a path failed, or a GPU is
# present that the installed torch cannot use. `--cpu` runs the same checks on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv (python3.11 -m venv .venv && .venv/bin/pip install -e .)" >&2
  python3.11 -m venv .venv && .venv/bin/pip install -qq -e . >&2
fi
exec timeout 1200 .venv/bin/python scripts/gpu_check.py "$@"
