"""Run a search job: Ray actors evaluate, the strategy asks and tells, the store checkpoints.

Only this driver writes to the job store. Every told result is committed together with the
strategy's state, so a resumed job re-sends exactly the candidates that had no trial row.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import ray

from prunehive.platform.jobs.base import JobRun
from prunehive.platform.jobs.cluster import connect_ray, say
from prunehive.platform.jobs.latency_feedback import LatencyFeedback
from prunehive.platform.jobs.metric_search.summary import finish_metric_search
from prunehive.platform.jobs.pool import ActorPool, auto_batch
from prunehive.platform.jobs.progress import SearchProgress
from prunehive.platform.jobs.search import summary
from prunehive.platform.jobs.search.dense import rule_of
from prunehive.platform.jobs.search.federated_eval import worker_class, worker_options
from prunehive.platform.jobs.search.finish import final_lm_eval
from prunehive.platform.jobs.search.setup import build_space, build_strategy, fixed_allocation, objective_name
from prunehive.platform.jobs.search.trials import (
    ChildRun,
    child_run,
    latency_request,
    objective_values,
    request,
    stage_steps,
    trial_row,
)
from prunehive.platform.jobs.structured_heal import healed_metrics, healed_summary
from prunehive.platform.jobs.structured_search import (
    is_structured,
    latency_prediction,
    penalty_budget,
    structured_space,
)
from prunehive.platform.jobs.summary_types import SearchSummary, TrialRow
from prunehive.platform.spec.job import JobSpec
from prunehive.platform.store.jobs import JobCancelled, JobStore
from prunehive.search.registry import strategy_class
from prunehive.search.strategy import Candidate, Outcome, Strategy
from prunehive.search.structured_space import StructuredSpace
from prunehive.workers.contracts import EvalResult, WorkerInfo

CANCEL_CHECK_SECONDS = 2.0  # how often a running search looks at its job's cancel flag


def make_pool(spec: JobSpec) -> ActorPool:
    res = spec.resources
    remote = ray.remote(worker_class(spec))  # type: ignore[attr-defined]
    threads = max(1, int(res.cpus_per_worker))
    latency = latency_request(spec)

    def factory(**placement: Any) -> Any:
        """One worker; ``placement``: the pool's actor options (its slot's scheduling strategy)."""
        p = spec.pruning
        actor = remote.options(num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker, max_restarts=0, **placement)
        return actor.remote(
            spec.task,
            p.metric,
            p.granularity,
            p.per_row,
            p.calibration_batches,
            spec.seed,
            threads,
            res.gpus_per_worker,
            True if spec.kind == "metric-search" else None,  # evolved expressions may read G
            latency=latency,
            solver=p.solver,
            levels=list(p.levels),
            fitness=spec.search.fitness,
            **worker_options(spec),  # search.evaluation federated: the clients' settings
        )

    return ActorPool(factory, res.workers, eval_timeout=spec.search.eval_timeout, resources=res)


class SearchRun(JobRun):
    """One search or metric-search job's driver loop; ``run()`` returns the summary (see ``summary.finish``)."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        ray_address: str | None = None,
        show_progress: bool = True,
        pool: ActorPool | None = None,
    ) -> None:
        """``pool``: warm actors of an identical task and pruning setup to reuse (a benchmark's); kept open."""
        super().__init__(store, job_id, ray_address, show_progress)
        self.pool = pool
        self.feedback: LatencyFeedback | None = None

    def run(self) -> dict[str, Any]:
        """The summary as the job store and ``run --json`` hold it."""
        return self.run_summary().to_dict()

    def run_summary(self) -> SearchSummary:
        spec = self.spec
        started = time.perf_counter()
        pool = self.pool
        try:
            with self.ending():
                parent = self._open_parent()  # first, so MLflow's Duration spans Ray, the workers and the warm start
                self.store.set_status(self.job_id, "running")
                connect_ray(self.ray_address)
                pool = pool or make_pool(spec)
                info = pool.start()[0]
                if is_structured(spec):  # per-sublayer level grids and the latency table, from a worker
                    extras = pool.call_one("space_extras", spec.pruning.latency_budget)
                    self.space = structured_space(spec, info.layers, extras, info.dense_params)
                else:
                    self.space = build_space(spec, info.layers)
                self.allocation = fixed_allocation(spec, self.space, pool) if spec.kind == "metric-search" else None
                warm = None
                if strategy_class(spec.strategy).warm_startable and spec.search.warm_start:
                    space = self.space.to_dict()
                    warm = [pool.call_one("allocation", name, space) for name in spec.search.baselines]
                if isinstance(self.space, StructuredSpace):  # after the warm starts, placed on the table's own budget
                    self.feedback = self._latency_feedback(self.space)
                strategy = build_strategy(
                    spec, self.space, self.job_id, self.store.url, self.allocation, warm, objective_name(spec, info)
                )
                if self.job.strategy_state:
                    strategy.load_state_dict(self.job.strategy_state, self.store.history(self.job_id))
                logger = self.tracker.background(parent)
                searching = time.perf_counter()
                self._search(pool, strategy, info, parent, logger)
                self._store_child_ids(logger.close(timeout=None))  # the search ends once every trial is in MLflow
                if self.feedback is not None:
                    self.feedback.restore()
                finishing = time.perf_counter()
                if spec.kind == "metric-search":
                    result = finish_metric_search(self, pool, strategy, info, parent)
                else:
                    result = summary.finish(self, pool, strategy, info, parent)
                result = final_lm_eval(self, parent, result)
                if is_structured(spec) and spec.pruning.recovery is not None:  # best and baselines healed alike
                    result = healed_summary(spec, pool, self.space, result)
                    self.tracker.log_metrics(parent, healed_metrics(result))
                if isinstance(self.space, StructuredSpace):  # the lookup table's predictions, checked
                    prediction = latency_prediction(
                        self.space, result.best, result.baselines, self.feedback, spec.pruning.latency_budget
                    )
                    if prediction is not None and "warning" in prediction:
                        say(f"warning: {prediction['warning']}")
                    result = replace(result, latency_prediction=prediction)
                if spec.pruning.solver != "mask":
                    result = replace(result, level_database=pool.call_one("level_database"))
                timing = {
                    "startup_seconds": searching - started,
                    "search_seconds": finishing - searching,
                    "finish_seconds": time.perf_counter() - finishing,
                }
                result = replace(result, timing=timing)
                self.tracker.log_metrics(parent, {f"timing.{k}": v for k, v in timing.items()})
                self.succeed(parent, result.to_dict())
                return result
        finally:
            if self.pool is None and pool is not None:
                pool.shutdown()

    def _open_parent(self) -> str:
        """A new parent run, or (resuming) the old one swept of runs the crash left behind; needs only the spec."""
        run_id = self.job.mlflow_run_id
        if run_id is None:
            params = {
                "task": self.spec.task,
                "strategy": self.spec.strategy,
                "metric": self.spec.pruning.metric,
                "granularity": self.spec.pruning.granularity,
                **rule_of(self.spec),  # per_row and rule: which weights compete, as the summary says
                "solver": self.spec.pruning.solver,
                "target_sparsity": self.spec.pruning.target,
                "budget": self.spec.search.budget,
                "seed": self.spec.search.seed,
                "workers": self.spec.resources.workers,
                **{f"strategy.{k}": v for k, v in self.spec.search.options.items()},
            }
            run_id = self.tracker.start_parent(self.job_id, params, {"prunehive.kind": "search"})
            self.store.set_mlflow_run(self.job_id, run_id)
            self.tracker.log_dict(run_id, self.job.spec, "spec.json")
        else:
            self.tracker.resume_parent(run_id)
            keep = {t.mlflow_run_id for t in self.store.trials(self.job_id) if t.mlflow_run_id}
            self.tracker.sweep(run_id, keep)
        return run_id

    def _latency_feedback(self, space: StructuredSpace) -> LatencyFeedback | None:
        """The working budget's feedback for a latency-budgeted structured search, replayed over the stored
        trials when the job resumes. It holds the search's aim (the table's budget, ``aim_budget``)."""
        if self.spec.pruning.latency_budget is None or space.latency is None or space.latency.budget is None:
            return None
        feedback = LatencyFeedback(space, space.latency.budget)
        for trial in sorted(map(TrialRow.of, self.store.trials(self.job_id)), key=lambda t: t.candidate.id):
            if trial.result is not None:
                feedback.observe(list(trial.candidate.sparsity), trial.result)
        return feedback

    def _child(self, cand: Candidate, result: EvalResult | None) -> ChildRun:
        return child_run(self.space.names, self.spec.strategy, cand, result)

    def _search(self, pool: ActorPool, strategy: Strategy, info: WorkerInfo, parent: str, logger: Any) -> None:
        spec = self.spec
        recorded = {t.candidate_id for t in self.store.trials(self.job_id)}
        # Trials left without a child run by a crash get one now; pending candidates are re-sent.
        for t in map(TrialRow.of, self.store.trials_missing_mlflow(self.job_id)):
            logger.submit(t.candidate_id, f"trial-{t.candidate_id}", *self._child(t.candidate, t.result))
        queue = [c for c in strategy.pending.values() if c.id not in recorded]
        deadline = time.monotonic() + spec.search.minutes * 60 if spec.search.minutes else math.inf
        batch = spec.resources.batch or 1
        candidates: dict[int, Candidate] = {c.id: c for c in queue}
        best = max((o.values[0] for _, o in strategy.history if o.state == "complete"), default=None)
        next_cancel_check = time.monotonic()
        with SearchProgress(spec.search.budget, strategy.told, info.scored_by, enabled=self.show_progress) as bar:
            while True:
                if time.monotonic() >= next_cancel_check:  # the service cancels a job by flagging its row
                    next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
                    if self.store.cancel_requested(self.job_id):
                        raise JobCancelled(f"job {self.job_id} cancelled")
                for slot in pool.free_slots():
                    items = [queue.pop(0) for _ in range(min(batch, len(queue)))]
                    if len(items) < batch and time.monotonic() < deadline:
                        items += strategy.ask(batch - len(items))
                    if not items:
                        break
                    candidates.update({c.id: c for c in items})
                    staged = spec.search.fidelity is not None  # each candidate scored on its stage's tokens
                    pool.submit(slot, [request(c, stage_steps(spec, c), staged) for c in items])
                if pool.idle:
                    break
                rows = []
                for reply in pool.wait(timeout=0.5):
                    cand, result = candidates.pop(reply.candidate_id), reply.result
                    if result is not None:
                        values = objective_values(
                            spec.search.objectives,
                            result,
                            info.dense_flops,
                            penalty_budget(spec),
                            spec.search.fitness,
                        )
                        outcome = Outcome(values)
                        if self.feedback is not None:
                            self.feedback.observe(list(cand.sparsity), result)
                        best = outcome.values[0] if best is None else max(best, outcome.values[0])
                    else:
                        outcome = Outcome.failed()
                    strategy.tell(cand.id, outcome)
                    rows.append(trial_row(cand, reply, outcome).to_dict())
                    logger.submit(cand.id, f"trial-{cand.id}", *self._child(cand, result))
                    if spec.resources.batch == 0 and result is not None:
                        batch = auto_batch(result.seconds, spec.search.budget, len(pool.actors), pool.depth)
                if rows:
                    self.store.record_trials(self.job_id, rows, strategy.state_dict())
                    bar.update(len(rows), best)
                    self._store_child_ids(logger.drain())

    def _store_child_ids(self, done: dict[Any, str]) -> None:
        if done:
            self.store.set_trial_mlflow_run({(self.job_id, int(k)): v for k, v in done.items()})
