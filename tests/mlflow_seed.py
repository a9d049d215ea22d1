"""An empty, migrated MLflow SQLite store for new job homes.

MLflow creates a new SQLite store by running its whole Alembic history, which costs seconds on every
test that starts from a fresh home. The store it leaves is always the same empty one, so the tests
migrate one per run (under ``PRUNEHIVE_CACHE``) and copy it into each home; the platform then opens
an up-to-date store exactly as it opens a user's existing ``mlflow.db``. Tests where creating the
store is part of what they check keep a new one: ``test_tracking`` and ``test_bulk_runs`` (creation),
``test_quiet_stderr`` (no migration noise on stderr), ``test_load``, ``test_isolation`` and
``test_dispatcher`` (jobs that start together on a new store).
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient


@functools.cache
def _template() -> Path:
    """Migrated once per test process (the MLflow version installed now, never a stale copy)."""
    folder = Path(tempfile.mkdtemp(prefix="prunehive-mlflow-", dir=os.environ.get("PRUNEHIVE_CACHE")))
    template = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments()  # creates and migrates it
    return template


def seed_mlflow(home: Path) -> Path:
    """Copy the migrated empty store to ``home/mlflow.db`` (the default tracking URI) unless one is there."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "mlflow.db"
    if not target.exists():
        shutil.copyfile(_template(), target)
    return target
