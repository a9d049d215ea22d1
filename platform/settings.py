"""Where the embedded defaults live: PRUNEHIVE_HOME (default ./.prunehive) and the job store URL."""

from __future__ import annotations

import os
from pathlib import Path


def prunehive_home() -> Path:
    """``$PRUNEHIVE_HOME`` (``~`` expanded) or ``./.prunehive``, created if missing."""
    path = Path(os.environ.get("PRUNEHIVE_HOME") or ".prunehive").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_database_url() -> str:
    """PRUNEHIVE_DATABASE_URL, else a SQLite file in PRUNEHIVE_HOME (Optuna's study lives there too)."""
    return os.environ.get("PRUNEHIVE_DATABASE_URL") or f"sqlite:///{prunehive_home() / 'prunehive.db'}"
