"""Bayesian optimisation of per-layer sparsity through Optuna's ask/tell interface.

Optuna samples one float per layer inside that layer's bounds; the base class repairs the vector
onto the budget. Optuna records the raw sampled point with the objective of its repair, so the
surrogate learns "raw point -> value" and the projection stays the strategy's own business.

Storage is a URL string (or None for in-memory); this module never touches SQL itself.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, GPSampler, TPESampler
from optuna.trial import TrialState, create_trial

from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, Outcome, Strategy

optuna.logging.set_verbosity(optuna.logging.WARNING)

SamplerName = Literal["tpe", "gp"]


class BayesianStrategy(Strategy):
    """TPE (multivariate, constant liar) or GP-based search over the per-layer sparsities.

    A fresh sampler is built for every ask, seeded from (seed, candidate id): proposals are then
    a pure function of the study's trials, so a resumed strategy continues exactly like the
    original without pickling a sampler's private RNG.
    """

    name = "bayesian"

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        sampler: SamplerName = "tpe",
        storage: str | None = None,
        study_name: str | None = None,
        n_startup_trials: int = 10,
        initial: list[list[float]] | None = None,
    ) -> None:
        super().__init__(space, budget, seed)
        self.initial = [list(map(float, v)) for v in (initial or [])]  # warm-start vectors, asked first
        if sampler not in ("tpe", "gp"):
            raise ValueError(f"unknown bayesian sampler {sampler!r}; choose 'tpe' or 'gp'")
        if n_startup_trials < 0:
            raise ValueError("n_startup_trials must be >= 0")
        if len(set(space.names)) != space.dim:
            raise ValueError("layer names must be unique to serve as Optuna parameter names")
        self.sampler_name: SamplerName = sampler
        self.storage = storage
        self.study_name = study_name or f"prunehive-bayesian-seed{seed}"
        self.n_startup_trials = n_startup_trials
        lo, hi = space.bounds()
        self.distributions: dict[str, BaseDistribution] = {
            name: FloatDistribution(float(a), float(b)) for name, a, b in zip(space.names, lo, hi, strict=True)
        }
        self._study: optuna.Study | None = None
        # candidate id -> Optuna trial number; each candidate's meta also holds it and the raw
        # sampled vector, so both are rebuilt from the history on resume rather than checkpointed.
        self.trial_of: dict[int, int] = {}
        # pending candidates whose trial already finished in storage (told after the checkpoint).
        self.finished_in_storage: set[int] = set()

    # ---- Optuna plumbing ---------------------------------------------------------------
    @property
    def study(self) -> optuna.Study:
        """The study, created on first use; a fresh run refuses to reuse an existing study."""
        if self._study is None:
            self._study = self._open(load_if_exists=False)
        return self._study

    def _open(self, load_if_exists: bool) -> optuna.Study:
        return optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            direction="maximize",
            load_if_exists=load_if_exists,
            sampler=self._make_sampler(self.next_id),
        )

    def _make_sampler(self, candidate_id: int) -> BaseSampler:
        digest = hashlib.sha256(f"{self.seed}:{candidate_id}".encode()).digest()
        seed = int.from_bytes(digest[:4], "little")
        if self.sampler_name == "gp":
            return GPSampler(seed=seed, n_startup_trials=self.n_startup_trials)
        return TPESampler(seed=seed, n_startup_trials=self.n_startup_trials, multivariate=True, constant_liar=True)

    # ---- ask/tell ----------------------------------------------------------------------
    def _propose(self, n: int) -> list[tuple[np.ndarray, dict[str, Any]]]:
        study = self.study
        out: list[tuple[np.ndarray, dict[str, Any]]] = []
        for k in range(n):
            cid = self.next_id + k  # the base numbers candidates in proposal order
            study.sampler = self._make_sampler(cid)
            if cid < len(self.initial):  # warm start: Optuna's own enqueue, asked first
                lo, hi = self.space.bounds()
                values = np.clip(self.initial[cid], lo, hi)
                study.enqueue_trial(dict(zip(self.space.names, map(float, values), strict=True)))
            trial = study.ask(fixed_distributions=self.distributions)
            raw = [float(trial.params[name]) for name in self.space.names]
            self.trial_of[cid] = trial.number
            out.append((np.asarray(raw), {"trial": trial.number, "raw": raw}))
        return out

    def _observe(self, candidate: Candidate, outcome: Outcome) -> None:
        number = self.trial_of[candidate.id]
        if candidate.id in self.finished_in_storage:
            # Told before a crash that lost the checkpoint: the study already holds its result.
            self.finished_in_storage.discard(candidate.id)
            return
        if outcome.state == "complete":
            self.study.tell(number, float(outcome.values[0]))
        else:
            self.study.tell(number, state=TrialState.FAIL)

    # ---- state -------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {
            "study_name": self.study_name,
            "sampler": self.sampler_name,
            "finished_in_storage": sorted(self.finished_in_storage),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if state["study_name"] != self.study_name:
            raise ValueError(f"state is for study {state['study_name']!r}, this strategy uses {self.study_name!r}")
        asked = [c for c, _ in self.history] + list(self.pending.values())
        self.trial_of = {c.id: int(c.meta["trial"]) for c in asked}
        self.finished_in_storage = {int(c) for c in state["finished_in_storage"]}
        self._study = self._open(load_if_exists=True)
        if self._study.get_trials(deepcopy=False):
            self._reconcile(self._study)
        elif self.trial_of:
            self._rebuild(self._study)

    def _raw(self) -> dict[int, list[float]]:
        """Each asked candidate's raw sampled vector (what Optuna holds as the trial's params)."""
        asked = [c for c, _ in self.history] + list(self.pending.values())
        return {c.id: [float(x) for x in c.meta["raw"]] for c in asked}

    def _reconcile(self, study: optuna.Study) -> None:
        """Resume on the stored study: fail trials lost in a crash, keep pending ones running."""
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        pending_numbers = {self.trial_of[cid] for cid in self.pending}
        raw = self._raw()
        for cid, number in self.trial_of.items():
            trial = by_number.get(number)
            if trial is None or [trial.params.get(n) for n in self.space.names] != raw[cid]:
                raise ValueError(f"study {self.study_name!r} does not hold candidate {cid}'s trial {number}")
            if cid in self.pending and trial.state.is_finished():
                self.finished_in_storage.add(cid)
        for trial in by_number.values():
            if trial.state == TrialState.RUNNING and trial.number not in pending_numbers:
                study.tell(trial.number, state=TrialState.FAIL)

    def _rebuild(self, study: optuna.Study) -> None:
        """Re-create an empty study (in-memory storage) from the history, keeping trial numbers:
        a number no candidate holds was lost in a crash and comes back as a failed trial."""
        told = {c.id: o for c, o in self.history}
        raw = self._raw()
        cid_of = {number: cid for cid, number in self.trial_of.items()}
        for number in range(max(cid_of) + 1):
            cid = cid_of.get(number)
            if cid is None:
                study.add_trial(create_trial(state=TrialState.FAIL))
                continue
            params = dict(zip(self.space.names, raw[cid], strict=True))
            if cid in told:
                outcome = told[cid]
                complete = outcome.state == "complete"
                study.add_trial(
                    create_trial(
                        state=TrialState.COMPLETE if complete else TrialState.FAIL,
                        value=float(outcome.values[0]) if complete else None,
                        params=params,
                        distributions=self.distributions,
                    )
                )
            else:  # pending: running again under the same number
                study.enqueue_trial(params)
                study.ask(fixed_distributions=self.distributions)
        self.finished_in_storage.clear()
