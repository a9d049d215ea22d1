"""A search's summary and a trial's row as typed objects; dicts only where they leave Python.

The summary is the contract between the search drivers, the CLI, the service, a benchmark, export and
the scripts. Drivers build a :class:`SearchSummary`; ``to_dict`` gives the JSON the job store, MLflow and
``run --json`` hold, with the keys in the order they have always had; ``from_dict`` reads it back (also
summaries written before a key existed: that key is None and stays out of ``to_dict``). No torch or Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prunehive.search.strategy import Candidate
from prunehive.workers.contracts import Entry, EvalResult, Failed, entry_from_dict
from prunehive.workers.quality import Quality

if TYPE_CHECKING:
    from prunehive.platform.store.records import TrialRecord


def entries_from_dict(data: dict[str, Any]) -> dict[str, Entry | Failed]:
    return {str(name): entry_from_dict(e) for name, e in data.items()}


def entries_to_dict(entries: dict[str, Entry | Failed]) -> dict[str, Any]:
    return {name: e.to_dict() for name, e in entries.items()}


def rule_to_dict(per_row: bool | None, rule: str | None) -> dict[str, Any]:
    """The ``per_row``/``rule`` keys, where the summary has them (ones written before they existed do not)."""
    return {k: v for k, v in (("per_row", per_row), ("rule", rule)) if v is not None}


@dataclass(frozen=True)
class SearchSummary:
    """A ``search`` or ``metric-search`` job's result: its best candidate (a metric search's best formula,
    with the ``leaderboard`` of formulas; a two-objective search's ``pareto_front``), the heuristic
    ``baselines`` and the ``dense`` model evaluated beside it on validation and test, and where it is in MLflow.
    ``lm_eval`` (lm-eval's scores) and ``level_database`` (a solver's database) are reports of their own."""

    job_id: str
    status: str
    trials: int
    quality: Quality
    best: Entry
    baselines: dict[str, Entry | Failed]
    mlflow_run_id: str
    tracking_uri: str
    kind: str | None = None  # "metric-search"; a search's summary names no kind
    leaderboard: list[Entry] | None = None
    dense: Entry | Failed | None = None
    per_row: bool | None = None
    rule: str | None = None
    pareto_front: list[Entry] | None = None
    evaluation_tokens: int | None = None
    lm_eval: dict[str, Any] | None = None
    level_database: dict[str, Any] | None = None
    timing: dict[str, float] | None = None
    latency_prediction: dict[str, Any] | None = None  # a structured search's lookup-table check

    @property
    def found(self) -> list[Entry]:
        """The candidates the search found, as its table lists them: the front, the leaderboard or the best."""
        return self.pareto_front or self.leaderboard or [self.best]

    def listed(self, candidate_id: int) -> Entry | None:
        """The summary's entry for ``candidate_id`` (best, Pareto member or leaderboard row), if it has one."""
        for entry in (self.best, *(self.pareto_front or []), *(self.leaderboard or [])):
            if entry.candidate_id == candidate_id:
                return entry
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job_id": self.job_id, "status": self.status}
        if self.kind is not None:
            out["kind"] = self.kind
        out.update(trials=self.trials, quality=self.quality.name, best=self.best.to_dict())
        if self.leaderboard is not None:
            out["leaderboard"] = [e.to_dict() for e in self.leaderboard]
        out["baselines"] = entries_to_dict(self.baselines)
        if self.dense is not None:
            out["dense"] = self.dense.to_dict()
        out.update(rule_to_dict(self.per_row, self.rule))
        out.update(mlflow_run_id=self.mlflow_run_id, tracking_uri=self.tracking_uri)
        optional = {
            "pareto_front": None if self.pareto_front is None else [e.to_dict() for e in self.pareto_front],
            "evaluation_tokens": self.evaluation_tokens,
            "lm_eval": self.lm_eval,
            "level_database": self.level_database,
            "timing": self.timing,
            "latency_prediction": self.latency_prediction,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSummary:
        def listed(key: str) -> list[Entry] | None:
            return None if data.get(key) is None else [Entry.from_dict(e) for e in data[key]]

        dense = data.get("dense")
        tokens = data.get("evaluation_tokens")
        return cls(
            job_id=str(data["job_id"]),
            status=str(data["status"]),
            trials=int(data["trials"]),
            quality=Quality.named(str(data["quality"])),
            best=Entry.from_dict(data["best"]),
            baselines=entries_from_dict(data["baselines"]),
            mlflow_run_id=str(data["mlflow_run_id"]),
            tracking_uri=str(data["tracking_uri"]),
            kind=data.get("kind"),
            leaderboard=listed("leaderboard"),
            dense=None if dense is None else entry_from_dict(dense),
            per_row=data.get("per_row"),
            rule=data.get("rule"),
            pareto_front=listed("pareto_front"),
            evaluation_tokens=None if tokens is None else int(tokens),
            lm_eval=data.get("lm_eval"),
            level_database=data.get("level_database"),
            timing=data.get("timing"),
            latency_prediction=data.get("latency_prediction"),
        )


ROW_KEYS = ("candidate_id", "state", "params", "result", "error", "worker", "seconds", "outcome")


@dataclass(frozen=True)
class TrialRow:
    """One told candidate as the job store records it (``params`` in its JSON is the candidate); ``outcome``,
    the values the strategy was told (rows recorded before they were kept, and the API's rows, have none)."""

    candidate_id: int
    state: str
    candidate: Candidate
    result: EvalResult | None
    error: str | None
    worker: str | None
    seconds: float | None
    outcome: list[float] | None = None

    @classmethod
    def of(cls, record: TrialRecord) -> TrialRow:
        """The store's record of a trial, typed."""
        return cls.from_dict({k: getattr(record, k) for k in ROW_KEYS})

    def to_dict(self) -> dict[str, Any]:
        out = {
            "candidate_id": self.candidate_id,
            "state": self.state,
            "params": self.candidate.to_dict(),
            "result": self.result.to_dict() if self.result is not None else None,
            "error": self.error,
            "worker": self.worker,
            "seconds": self.seconds,
        }
        return out if self.outcome is None else out | {"outcome": list(self.outcome)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRow:
        result, seconds, outcome = data.get("result"), data.get("seconds"), data.get("outcome")
        return cls(
            candidate_id=int(data["candidate_id"]),
            state=str(data["state"]),
            candidate=Candidate.from_dict(data["params"]),
            result=EvalResult.from_dict(result) if result else None,
            error=data.get("error"),
            worker=data.get("worker"),
            seconds=None if seconds is None else float(seconds),
            outcome=None if outcome is None else [float(v) for v in outcome],
        )
