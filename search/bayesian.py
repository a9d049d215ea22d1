"""Bayesian optimisation of per-layer sparsity through Optuna's ask/tell interface.

Optuna samples one float per layer inside that layer's bounds; the base class repairs the vector
onto the budget. Optuna records the raw sampled point with the objective of its repair, so the
surrogate learns "raw point -> value" and the projection stays the strategy's own business.

Storage is a URL string (or None for in-memory); this module never touches SQL itself, and uses
Optuna's public API only. The study is named by the caller (the driver: ``prunehive-<job id>``) and
its objective carries a name (``metric_names``, e.g. ``val_accuracy``) for optuna-dashboard.

With ``fidelity``/``survivors`` it runs successive halving (:mod:`prunehive.search.halving`) through
Optuna's own pruning: one Optuna trial per fresh candidate, each stage's value reported as the
trial's intermediate value at step = stage, the candidates a stage does not promote told PRUNED (TPE
still learns from them, ranked by how far they got), and only last-stage trials COMPLETE.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, GPSampler, TPESampler
from optuna.trial import TrialState, create_trial

from prunehive.search.halving import Halving, make_halving, staged_candidate, top_stage_best
from prunehive.search.options import BayesianOptions
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Candidate, CandidateMeta, Outcome, Proposal, Strategy

optuna.logging.set_verbosity(optuna.logging.WARNING)

SamplerName = Literal["tpe", "gp"]


class BayesianStrategy(Strategy):
    """TPE (multivariate, constant liar) or GP-based search over the per-layer sparsities.

    A fresh sampler is built for every ask, seeded from (seed, candidate id): proposals are then
    a pure function of the study's trials, so a resumed strategy continues exactly like the
    original without pickling a sampler's private RNG.

    Options beyond the sampler's: ``fidelity``, ``survivors`` (successive halving: tokens per stage,
    candidates promoted after each) and ``rung`` (fresh trials per rung, default twice ``survivors[0]``).
    """

    name = "bayesian"
    Options = BayesianOptions

    def __init__(
        self,
        space: SearchSpace,
        budget: int,
        seed: int = 0,
        *,
        sampler: SamplerName = "tpe",
        storage: str | None = None,
        study_name: str | None = None,
        metric_names: list[str] | None = None,
        n_startup_trials: int = 10,
        initial: list[list[float]] | None = None,
        fidelity: list[int] | None = None,
        survivors: list[int] | None = None,
        rung: int | None = None,
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
        self.metric_names = list(metric_names) if metric_names else None
        self.n_startup_trials = n_startup_trials
        lo, hi = space.bounds()
        self.distributions: dict[str, BaseDistribution] = {
            name: FloatDistribution(float(a), float(b)) for name, a, b in zip(space.names, lo, hi, strict=True)
        }
        self._study: optuna.Study | None = None
        # candidate id -> Optuna trial number; each candidate's meta also holds it and the raw
        # sampled vector, so both are rebuilt from the history on resume rather than checkpointed.
        self.trial_of: dict[int, int] = {}
        # pending candidates whose tell already landed in storage (told after the checkpoint).
        self.finished_in_storage: set[int] = set()
        self.halving: Halving | None = make_halving(fidelity, survivors, rung)
        self._live: dict[int, optuna.Trial] = {}  # staged trials still running, to report stages on
        self._landed: dict[int, set[int]] = {}  # steps a resumed study already held, by trial number
        self._ids: optuna.storages.RDBStorage | None = None  # reads trial ids after a resume (``_trial``)

    # ---- Optuna plumbing ---------------------------------------------------------------
    @property
    def study(self) -> optuna.Study:
        """The study, created on first use; a fresh run refuses to reuse an existing study."""
        if self._study is None:
            self._study = self._open(load_if_exists=False)
        return self._study

    def _open(self, load_if_exists: bool) -> optuna.Study:
        study = optuna.create_study(
            storage=self.storage,
            study_name=self.study_name,
            direction="maximize",
            load_if_exists=load_if_exists,
            sampler=self._make_sampler(self.next_id),
        )
        if self.metric_names and study.metric_names != self.metric_names:  # also names a resumed older study
            with warnings.catch_warnings():  # experimental in Optuna, stable in what it stores
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.metric_names)
        return study

    def _make_sampler(self, candidate_id: int) -> BaseSampler:
        digest = hashlib.sha256(f"{self.seed}:{candidate_id}".encode()).digest()
        seed = int.from_bytes(digest[:4], "little")
        if self.sampler_name == "gp":
            return GPSampler(seed=seed, n_startup_trials=self.n_startup_trials)
        return TPESampler(seed=seed, n_startup_trials=self.n_startup_trials, multivariate=True, constant_liar=True)

    # ---- ask/tell ----------------------------------------------------------------------
    def _propose(self, n: int) -> list[Proposal]:
        if self.halving is not None:
            out = self.halving.propose(n, self, lambda k, index: self._ask(self.next_id + k, index), self._prune)
        else:
            out = [self._ask(self.next_id + k, self.next_id + k) for k in range(n)]
        for k, (_, meta) in enumerate(out):  # a promoted candidate carries its trial on in its meta
            self.trial_of[self.next_id + k] = int(meta["trial"])  # the base numbers candidates in order
        return out

    def _ask(self, cid: int, index: int) -> Proposal:
        """A new Optuna trial; the ``index``-th fresh one is a warm start while any are left."""
        study = self.study
        study.sampler = self._make_sampler(cid)
        if index < len(self.initial):  # warm start: Optuna's own enqueue, asked first
            lo, hi = self.space.bounds()
            values = np.clip(self.initial[index], lo, hi)
            study.enqueue_trial(dict(zip(self.space.names, map(float, values), strict=True)))
        trial = study.ask(fixed_distributions=self.distributions)
        if self.halving is not None:
            self._live[trial.number] = trial
        raw = [float(trial.params[name]) for name in self.space.names]
        return np.asarray(raw), {"trial": trial.number, "raw": raw}

    def _candidate(self, ident: int, vector: np.ndarray, meta: CandidateMeta) -> Candidate:
        return staged_candidate(self.space, ident, vector, meta)

    def best(self) -> list[Candidate]:
        return top_stage_best(self.history) if self.halving is not None else super().best()

    def _observe(self, candidate: Candidate, outcome: Outcome) -> None:
        number = self.trial_of[candidate.id]
        if candidate.id in self.finished_in_storage:
            # Told before a crash that lost the checkpoint: the study already holds its result.
            self.finished_in_storage.discard(candidate.id)
            return
        if outcome.state != "complete":
            self._finish(number, state=TrialState.FAIL)
        elif self.halving is None:
            self.study.tell(number, float(outcome.values[0]))
        else:
            stage = int(candidate.meta["fidelity"])
            if stage not in self._landed.get(number, set()):  # else reported before a crash lost the checkpoint
                self._trial(number).report(float(outcome.values[0]), stage)
            if stage == self.halving.last:
                self._finish(number, float(outcome.values[0]))

    def _prune(self, dropped: list[Candidate]) -> None:
        """Candidates a stage did not promote: their trials end PRUNED at their last reported value.
        A stage re-ranked after a crash may prune a trial again, which Optuna then skips."""
        for cand in dropped:
            self._finish(self.trial_of[cand.id], state=TrialState.PRUNED)

    def _finish(self, number: int, value: float | None = None, state: TrialState | None = None) -> None:
        self._live.pop(number, None)
        self.study.tell(number, value, state=state, skip_if_finished=self.halving is not None)

    def _trial(self, number: int) -> optuna.Trial:
        """The running trial ``number``, to report on. After a resume on stored studies it is re-opened
        by its storage id, read through a storage of our own on the same URL: ids never change, and the
        study's own storage (it may cache running trials) does every write."""
        if number not in self._live:
            if self.storage is None:  # an in-memory study is rebuilt with its running trials in _live
                raise KeyError(f"trial {number} of study {self.study_name!r} is not running here")
            if self._ids is None:
                self._ids = optuna.storages.RDBStorage(self.storage)
            study_id = self._ids.get_study_id_from_name(self.study_name)
            trial_id = self._ids.get_trial_id_from_study_id_trial_number(study_id, number)
            self._live[number] = optuna.Trial(self.study, trial_id)
        return self._live[number]

    # ---- state -------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        state = {
            "study_name": self.study_name,
            "sampler": self.sampler_name,
            "finished_in_storage": sorted(self.finished_in_storage),
        }
        return state | ({"halving": self.halving.state_dict()} if self.halving is not None else {})

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.study_name = state["study_name"]  # the study holding the trials, even if named otherwise today
        if self.halving is not None:
            self.halving.load_state_dict(state["halving"])
        self.trial_of = {c.id: int(c.meta["trial"]) for c in self._asked().values()}
        self.finished_in_storage = {int(c) for c in state["finished_in_storage"]}
        self._live, self._landed = {}, {}
        self._study = self._open(load_if_exists=True)
        if self._study.get_trials(deepcopy=False):
            self._reconcile(self._study)
        elif self.trial_of:
            self._rebuild(self._study)

    def _asked(self) -> dict[int, Candidate]:
        return {c.id: c for c in [c for c, _ in self.history] + list(self.pending.values())}

    def _raw(self) -> dict[int, list[float]]:
        """Each asked candidate's raw sampled vector (what Optuna holds as the trial's params)."""
        return {cid: [float(x) for x in c.meta["raw"]] for cid, c in self._asked().items()}

    def _reconcile(self, study: optuna.Study) -> None:
        """Resume on the stored study: fail trials lost in a crash (asked of Optuna, never recorded),
        keep the others running: pending ones, and (staged) those waiting for their stage's ranking."""
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        raw = self._raw()
        for cid, number in self.trial_of.items():
            trial = by_number.get(number)
            if trial is None or [trial.params.get(n) for n in self.space.names] != raw[cid]:
                raise ValueError(f"study {self.study_name!r} does not hold candidate {cid}'s trial {number}")
            if cid in self.pending and trial.state.is_finished():
                self.finished_in_storage.add(cid)
            self._landed[number] = set(trial.intermediate_values)
        known = set(self.trial_of.values())
        for trial in by_number.values():
            if trial.state == TrialState.RUNNING and trial.number not in known:
                study.tell(trial.number, state=TrialState.FAIL)

    def _rebuild(self, study: optuna.Study) -> None:
        """Re-create an empty study (in-memory storage) from the history, keeping trial numbers:
        a number no candidate holds was lost in a crash and comes back as a failed trial. A staged
        trial gets back its stages' values as intermediate values, and the state its rung gave it."""
        told = {c.id: o for c, o in self.history}
        asked, raw = self._asked(), self._raw()
        cids_of: dict[int, list[int]] = {}
        for cid in sorted(self.trial_of):
            cids_of.setdefault(self.trial_of[cid], []).append(cid)
        for number in range(max(cids_of) + 1):
            cids = cids_of.get(number)
            if cids is None:
                study.add_trial(create_trial(state=TrialState.FAIL))
                continue
            params = dict(zip(self.space.names, raw[cids[-1]], strict=True))
            steps = {
                int(asked[c].meta["fidelity"]): float(told[c].values[0])
                for c in cids
                if self.halving is not None and c in told and told[c].state == "complete"
            }
            state, value = self._stored_state(asked[cids[-1]], told.get(cids[-1]))
            if state == TrialState.RUNNING:  # pending, or waiting for its stage's ranking: running again
                study.enqueue_trial(params)
                trial = study.ask(fixed_distributions=self.distributions)
                for step, v in steps.items():
                    trial.report(v, step)
                if self.halving is not None:
                    self._live[number] = trial
                continue
            study.add_trial(
                create_trial(
                    state=state,
                    value=value,
                    params=params,
                    distributions=self.distributions,
                    intermediate_values=steps,
                )
            )
        self.finished_in_storage.clear()

    def _stored_state(self, latest: Candidate, outcome: Outcome | None) -> tuple[TrialState, float | None]:
        """What the study held for a trial whose latest asked candidate is ``latest``."""
        if outcome is None:
            return TrialState.RUNNING, None
        if outcome.state != "complete":
            return TrialState.FAIL, None
        value = float(outcome.values[0])
        halving = self.halving
        if halving is None or latest.meta["fidelity"] == halving.last:
            return TrialState.COMPLETE, value
        rung, stage = int(latest.meta["rung"]), int(latest.meta["fidelity"])
        if halving.decided(rung, stage) and latest.id not in halving.promote:
            return TrialState.PRUNED, value if math.isfinite(value) else None
        return TrialState.RUNNING, None
