#!/usr/bin/env bash
# The README's test command: install everything into .venv, then lint, type-check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
python3.11 -m venv .venv
.venv/bin/pip install -qq -e '.[dev]'
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest -q "$@"
