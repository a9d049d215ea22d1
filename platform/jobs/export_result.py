"""What ``prunehive export`` works from and what it answers: the chosen candidate as the job recorded it,
and the result ``--json`` prints, one type for every format and granularity."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunehive.workers.contracts import EvalResult


@dataclass(frozen=True)
class Chosen:
    """The candidate to export, as the job recorded it."""

    candidate_id: int
    sparsity: dict[str, float]  # requested, per layer, in the workers' layer order
    metric: str  # the importance metric its weights were ranked by
    result: EvalResult  # the trial's recorded result (metrics, achieved sparsity, per-layer)


@dataclass(frozen=True)
class Exported:
    """An export's answer: which candidate went where, as which files, with its recorded scores; ``shape``,
    what a structured export adds (``healed``, ``form``, ``trust_remote_code``, ``parameters``)."""

    job_id: str
    chosen: Chosen
    format: str
    out: Path
    files: list[str]
    granularity: str
    metrics: dict[str, Any]
    test_metrics: dict[str, float] | None
    shape: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` keys, in the order they have always had."""
        return {
            "job_id": self.job_id,
            "candidate": self.chosen.candidate_id,
            "format": self.format,
            "out": str(self.out),
            "files": self.files,
            "metric": self.chosen.metric,
            "granularity": self.granularity,
            "achieved_sparsity": self.chosen.result.achieved_sparsity,
            "metrics": self.metrics,
            "test_metrics": self.test_metrics,
            **self.shape,
        }
