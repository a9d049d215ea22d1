"""Run a benchmark job: every (sparsity, strategy, seed) as its own search job, then one report.

Each cell is a real ``kind: search`` job in the store, run by :class:`SearchRun` on the same Ray and
logged to the benchmark's MLflow experiment, so it is resumable on its own and shows up in the MLflow
UI as a run (nested under the benchmark's parent run) that the compare view lines up with the others.
The benchmark's parent run holds the report and its plots.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from rich.console import Console

from prunehive.platform.jobs.base import JobRun, start_job
from prunehive.platform.jobs.benchmark.report import Cell, aggregate, target_label, write_report
from prunehive.platform.jobs.cluster import connect_ray
from prunehive.platform.jobs.pool import ActorPool
from prunehive.platform.jobs.report_types import BenchmarkSummary
from prunehive.platform.jobs.search.driver import SearchRun, make_pool
from prunehive.platform.jobs.summary_types import SearchSummary, TrialRow
from prunehive.platform.settings import prunehive_home
from prunehive.platform.spec.job import JobSpec, parse_spec
from prunehive.platform.store.jobs import JobCancelled, JobStore
from prunehive.workers.contracts import Entry
from prunehive.workers.granularity import pruning_rule

TAG_BENCHMARK = "prunehive.benchmark_job_id"


def cell_spec(spec: JobSpec, tracking_uri: str, sparsity: float | None, strategy: str, seed: int) -> dict[str, Any]:
    """The search job of one cell: the benchmark's task, pruning and search settings, one strategy and seed."""
    data = spec.model_dump(mode="json")
    pruning = dict(data["pruning"])
    if sparsity is not None:
        pruning.update(sparsity=sparsity, flops_budget=None)
    search = dict(data["search"])
    search.update(
        strategy=strategy,
        seed=seed,
        baselines=list(spec.benchmark.baselines),
        options=dict(spec.benchmark.options.get(strategy, {})),
        objectives=["quality"],
    )
    return {
        "kind": "search",
        "name": f"{spec.display_name}/{strategy}/seed{seed}/{target_label(sparsity)}",
        "task": data["task"],  # a name, or the typed mapping (absolute paths) as the user wrote it
        "seed": spec.seed,
        "pruning": pruning,
        "search": search,
        "resources": data["resources"],
        "tracking": {"mlflow_uri": tracking_uri, "experiment": spec.experiment},
    }


@dataclass(frozen=True)
class PlannedCell:
    """One (sparsity, strategy, seed) of a benchmark and its search job, as the job row keeps them for a resume."""

    sparsity: float | None
    strategy: str
    seed: int
    job_id: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlannedCell:
        sparsity = None if data["sparsity"] is None else float(data["sparsity"])
        return cls(sparsity, str(data["strategy"]), int(data["seed"]), str(data["job_id"]))


class BenchmarkRun(JobRun):
    """One benchmark's driver; ``run()`` returns the summary (tables, baselines, report path)."""

    def __init__(
        self, store: JobStore, job_id: str, ray_address: str | None = None, show_progress: bool = True
    ) -> None:
        super().__init__(store, job_id, ray_address, show_progress)
        self.console = Console(stderr=True, quiet=not show_progress)

    def run(self) -> dict[str, Any]:
        spec = self.spec
        started = time.perf_counter()
        with self.ending():
            parent = self.job.mlflow_run_id  # opened first, so MLflow's Duration spans Ray and the workers
            if parent is None:
                parent = self._open_parent()
            else:
                self.tracker.resume_parent(parent)
            self.store.set_status(self.job_id, "running")
            connect_ray(self.ray_address)
            plan = self._plan()
            pool = make_pool(spec)  # one set of warm actors for every cell: same task and pruning setup
            try:
                cells = []
                for i, entry in enumerate(plan):
                    if self.store.cancel_requested(self.job_id):  # the service cancels between cells
                        raise JobCancelled(f"job {self.job_id} cancelled")
                    cells.append(self._run_cell(i, len(plan), entry, parent, pool))
            finally:
                pool.shutdown()
            searching_done = time.perf_counter()
            result = aggregate(cells, spec)
            directory = prunehive_home() / "benchmarks" / self.job_id
            report = write_report(directory, result, cells, spec)
            result = replace(
                result,
                job_id=self.job_id,
                status="succeeded",
                mlflow_run_id=parent,
                tracking_uri=self.tracking_uri,
                report=str(report),
                timing={
                    "total_seconds": time.perf_counter() - started,
                    "report_seconds": time.perf_counter() - searching_done,
                },
            )
            summary = result.to_dict()
            (directory / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
            for path in sorted(directory.rglob("*")):
                if path.is_file():
                    folder = path.parent.relative_to(directory).as_posix()
                    self.tracker.log_file(parent, path, None if folder == "." else folder)
            self.tracker.log_metrics(parent, _final_metrics(result))
            return self.succeed(parent, summary)

    def _open_parent(self) -> str:
        spec, bench = self.spec, self.spec.benchmark
        params = {
            "task": spec.task_ref,
            "metric": spec.pruning.metric,
            "granularity": spec.pruning.granularity,
            **pruning_rule(spec.pruning.granularity, spec.pruning.per_row, spec.pruning.metric),
            "strategies": ",".join(bench.strategies),
            "seeds": ",".join(str(s) for s in bench.seed_list),
            "sparsities": ",".join(target_label(s) for s in bench.sparsities or [None]),
            "baselines": ",".join(bench.baselines),
            "budget": spec.search.budget,
            "workers": spec.resources.workers,
        }
        run_id = self.tracker.start_parent(self.job_id, params, {"prunehive.kind": "benchmark"})
        self.tracker.rename(run_id, f"benchmark-{self.job_id[:8]}")
        self.store.set_mlflow_run(self.job_id, run_id)
        self.tracker.log_dict(run_id, self.job.spec, "spec.json")
        return run_id

    def _plan(self) -> list[PlannedCell]:
        """The cells and their search jobs, created once and kept in the job row so a resume reuses them."""
        state = self.job.strategy_state or {}
        if state.get("cells"):
            return [PlannedCell.from_dict(c) for c in state["cells"]]
        spec, bench = self.spec, self.spec.benchmark
        plan = []
        for sparsity in bench.sparsities or [None]:
            for strategy in bench.strategies:
                for seed in bench.seed_list:
                    sub = parse_spec(cell_spec(spec, self.tracking_uri, sparsity, strategy, seed))
                    plan.append(PlannedCell(sparsity, strategy, seed, start_job(self.store, sub)))
        self.store.save_state(self.job_id, {"cells": [asdict(c) for c in plan]})
        return plan

    def _run_cell(self, index: int, total: int, cell: PlannedCell, parent: str, pool: ActorPool) -> Cell:
        job = self.store.get_job(cell.job_id)
        label = target_label(cell.sparsity)
        what = f"{cell.strategy} seed {cell.seed} at {label}"
        if job.status == "succeeded" and job.summary:
            self.console.print(f"benchmark [{index + 1}/{total}] {what}: done earlier (job {job.id[:8]})")
            summary = SearchSummary.from_dict(job.summary)
        else:
            self.console.print(f"benchmark [{index + 1}/{total}] {what} (job {job.id[:8]})")
            summary = SearchRun(self.store, job.id, self.ray_address, self.show_progress, pool=pool).run_summary()
        run_id = summary.mlflow_run_id
        # Nest the cell's run under the benchmark and give it a readable name and its allocation as params.
        self.tracker.set_tags(run_id, {MLFLOW_PARENT_RUN_ID: parent, TAG_BENCHMARK: self.job_id})
        self.tracker.rename(run_id, f"{cell.strategy}-seed{cell.seed}-{label}")
        self.tracker.log_params(run_id, {f"sparsity.{n}": round(v, 6) for n, v in summary.best.layers.items()})
        trials = sorted(self.store.trials(job.id), key=lambda t: t.id)  # in the order they were told
        # NSGA-II also explores below the target; only evaluations that reach it count towards the curve.
        floor = -math.inf if cell.sparsity is None else cell.sparsity - 5e-3
        results = [t.result if t.state == "complete" else None for t in map(TrialRow.of, trials)]
        curve = [r.objective() if r is not None and r.achieved_sparsity >= floor else math.nan for r in results]
        return Cell(cell.sparsity, cell.strategy, cell.seed, job.id, run_id, summary, curve)


def _final_metrics(result: BenchmarkSummary) -> dict[str, float]:
    """The table as metrics of the parent run: ``<strategy>.<sparsity>.test.<quality>.mean`` and so on."""
    q = result.quality.name
    metrics: dict[str, float] = {}
    for row in result.table:
        key = f"{row.name}.{target_label(row.target)}"
        for split, mean, std in (
            ("validation", row.validation_mean, row.validation_std),
            ("test", row.test_mean, row.test_std),
        ):
            metrics[f"{key}.{split}.{q}.mean"] = mean
            if std is not None:
                metrics[f"{key}.{split}.{q}.std"] = std
        metrics[f"{key}.achieved_sparsity"] = row.achieved_sparsity
    if isinstance(result.dense, Entry):  # as a search's parent run names them
        for split, scores in result.dense.metrics.items():
            metrics.update({f"dense.{split}.{k}": float(v) for k, v in scores.to_dict().items()})
    return metrics
