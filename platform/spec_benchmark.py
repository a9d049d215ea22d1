"""The ``benchmark:`` section of a job spec (``kind: benchmark``): strategies, seeds, sparsities."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from prunehive.platform.spec import JobSpec


class BenchmarkOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_benchmark(spec: JobSpec) -> None:
    """Cross-field checks for ``kind: benchmark``; raises ValueError naming the field."""
