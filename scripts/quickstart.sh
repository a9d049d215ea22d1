#!/usr/bin/env bash
# The README's main command: install everything into .venv and run the example search job.
set -euo pipefail
cd "$(dirname "$0")/.."
python3.11 -m venv .venv
.venv/bin/pip install -qq -e .
.venv/bin/prunehive run examples/digits-mlp-evolution.yaml "$@"
