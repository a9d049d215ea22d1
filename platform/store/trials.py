"""Trial rows: each told candidate exactly once, with its outcome, written together with the
strategy's checkpoint; and the told history read back from them when a job resumes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import and_, func, insert, select, update

from prunehive.platform.store.db import Database, check, rowcount
from prunehive.platform.store.models import TRIAL_STATES, Job, Trial, utcnow
from prunehive.platform.store.records import TrialRecord, record
from prunehive.search.strategy import Candidate, Outcome

TRIAL_FIELDS = frozenset({"candidate_id", "state", "params", "result", "error", "worker", "seconds", "outcome"})
REQUIRED_TRIAL_FIELDS = frozenset({"candidate_id", "state", "params"})


class TrialStore(Database):
    """The store's trial rows (``job_trials``)."""

    def record_trial(
        self,
        job_id: str,
        candidate_id: int,
        *,
        state: str,
        params: dict[str, Any],
        result: dict[str, Any] | None = None,
        error: str | None = None,
        worker: str | None = None,
        seconds: float | None = None,
        strategy_state: dict[str, Any] | None = None,
        outcome: list[float] | None = None,
    ) -> bool:
        """False (and nothing changed) when this candidate was already recorded."""
        row = {"candidate_id": candidate_id, "state": state, "params": params, "result": result}
        row |= {"error": error, "worker": worker, "seconds": seconds, "outcome": outcome}
        return self.record_trials(job_id, [row], strategy_state) == 1

    def record_trials(
        self, job_id: str, rows: Iterable[Mapping[str, Any]], strategy_state: dict[str, Any] | None = None
    ) -> int:
        """Insert the trials not yet recorded and save the checkpoint, in one transaction.

        Rows are inserted in the order given, which is the order their candidates were told.
        The first statement updates the job row (heartbeat and checkpoint), which locks it, so
        writers of one job take turns and the duplicate check cannot race. If no row is new the
        transaction is rolled back: nothing changes. Returns the number of trials inserted.
        """
        now = utcnow()
        batch: dict[int, dict[str, Any]] = {}
        for row in rows:
            if not row.keys() >= REQUIRED_TRIAL_FIELDS or not row.keys() <= TRIAL_FIELDS:
                raise ValueError(f"trial row needs {sorted(REQUIRED_TRIAL_FIELDS)}, may have {sorted(TRIAL_FIELDS)}")
            check(row["state"], TRIAL_STATES, "trial state")
            values = {field: row.get(field) for field in TRIAL_FIELDS} | {"job_id": job_id, "created_at": now}
            batch.setdefault(int(row["candidate_id"]), values)
        if not batch:
            return 0
        job_values: dict[str, Any] = {"heartbeat_at": now}
        if strategy_state is not None:
            job_values["strategy_state"] = strategy_state
        with self.session() as s:
            if rowcount(s.execute(update(Job).where(Job.id == job_id).values(**job_values))) == 0:
                raise KeyError(f"no job {job_id!r}")
            seen = select(Trial.candidate_id).where(Trial.job_id == job_id, Trial.candidate_id.in_(batch))
            done = set(s.scalars(seen))
            new = [values for candidate_id, values in batch.items() if candidate_id not in done]
            if not new:
                s.rollback()
                return 0
            s.execute(insert(Trial), new)  # executemany: row by row, so ids follow the order told
        return len(new)

    def trials(self, job_id: str) -> list[TrialRecord]:
        """Ordered by candidate id."""
        return self._trials(select(Trial).where(Trial.job_id == job_id))

    def trials_missing_mlflow(self, job_id: str) -> list[TrialRecord]:
        """Trials still to be logged to MLflow (e.g. the tracking server was down)."""
        return self._trials(select(Trial).where(Trial.job_id == job_id, Trial.mlflow_run_id.is_(None)))

    def _trials(self, query: Any) -> list[TrialRecord]:
        with self.session() as s:
            return [record(TrialRecord, trial) for trial in s.scalars(query.order_by(Trial.candidate_id))]

    def history(self, job_id: str) -> list[tuple[Candidate, Outcome]]:
        """Every told candidate and its outcome in the order told: what a strategy resumes from."""
        with self.session() as s:
            rows = s.execute(
                select(Trial.candidate_id, Trial.params, Trial.state, Trial.outcome)
                .where(Trial.job_id == job_id)
                .order_by(Trial.id)
            ).all()
        told = []
        for candidate_id, params, state, outcome in rows:
            if state == "complete" and outcome is None:
                raise ValueError(f"trial {candidate_id} of job {job_id} has no outcome values to resume from")
            told.append((Candidate.from_dict(params), Outcome(tuple(float(v) for v in outcome or ()), state)))
        return told

    def count_trials(self, job_id: str) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(Trial).where(Trial.job_id == job_id)) or 0

    def set_trial_mlflow_run(self, runs: Mapping[int, str] | Mapping[tuple[str, int], str]) -> int:
        """Keys are trial ids or (job_id, candidate_id); one transaction. Returns rows updated."""
        updated = 0
        with self.session() as s:
            for key, run_id in runs.items():
                if isinstance(key, tuple):
                    where = and_(Trial.job_id == key[0], Trial.candidate_id == key[1])
                else:
                    where = Trial.id == key
                updated += rowcount(s.execute(update(Trial).where(where).values(mlflow_run_id=run_id)))
        return updated
