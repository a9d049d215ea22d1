"""The ``federated:`` section of a job spec (``kind: federated``): clients, rounds, partitioning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from prunehive.platform.spec import JobSpec


class FederatedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_federated(spec: JobSpec) -> None:
    """Cross-field checks for ``kind: federated``; raises ValueError naming the field."""
