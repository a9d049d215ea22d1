"""Run a ``kind: federated`` job: Flower simulations on the platform's Ray, tracked in MLflow.

Mirrors ``SearchRun``: the job row goes running -> succeeded | failed | cancelled, the job is one
MLflow parent run (params, per-round metrics, plots, ``summary.json``), and ``run()`` returns the
summary that ``prunehive run --json`` prints. The dense FedAvg reference, when asked for, is a
child run with the same per-round metrics, run with the same seed after the pruned simulation.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

from prunehive.platform.jobs.base import JobRun
from prunehive.platform.jobs.cluster import connect_ray
from prunehive.platform.jobs.federated import report
from prunehive.platform.jobs.report_types import (
    DenseReference,
    FederatedFinal,
    FederatedSummary,
    Tier,
    Traffic,
)
from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.platform.spec.job import JobSpec
from prunehive.platform.store.jobs import JobStore
from prunehive.workers.federated.simulation import SimulationResult, SimulationSettings, simulate
from prunehive.workers.federated.strategy import RoundRecord
from prunehive.workers.granularity import pruning_rule


def settings_for(spec: JobSpec, store: JobStore, dense: bool = False) -> SimulationSettings:
    """The simulation a spec asks for; ``dense`` gives the FedAvg reference with the same seed."""
    fed, pruning = spec.federated, spec.pruning
    plan = "dense" if dense else (pruning.plan or "fixed")
    targets = [0.0] if dense else (list(fed.tiers) if plan == "heterogeneous" else [pruning.target])
    allocation: str | dict[str, float] = pruning.allocation
    if pruning.from_job and not dense:
        allocation = best_allocation(store, pruning.from_job)
    return SimulationSettings(
        task=spec.task_ref,
        plan=plan,
        targets=targets,
        clients=fed.clients,
        fraction=fed.fraction,
        rounds=fed.rounds,
        local_epochs=fed.local_epochs,
        batch_size=fed.batch_size,
        lr=fed.lr,
        partition_kind=fed.partition_kind,
        partition_value=fed.partition_value,
        seed=fed.seed,
        task_seed=spec.seed,
        metric=pruning.metric,
        granularity=pruning.granularity,
        per_row=pruning.per_row,
        calibration_batches=pruning.calibration_batches,
        allocation=allocation,
        ramp_rounds=fed.ramp_rounds,
        min_density=pruning.min_density,
        bounds={k: (float(v[0]), float(v[1])) for k, v in pruning.bounds.items()},
        cpus_per_client=spec.resources.cpus_per_worker,
        gpus_per_client=spec.resources.gpus_per_worker,
        round_timeout=fed.round_timeout,
        client_budget=dict(fed.client_budget),
        mask_interval=fed.mask_interval,
    )


def best_allocation(store: JobStore, job_id: str) -> dict[str, float]:
    """Per-layer sparsities of the best candidate of a finished search job."""
    job = store.get_job(job_id)
    if job.kind != "search" or job.status != "succeeded" or not job.summary or "best" not in job.summary:
        raise ValueError(f"pruning.from_job: job {job.id} is not a finished search job (kind {job.kind}, {job.status})")
    return dict(SearchSummary.from_dict(job.summary).best.layers)


class FederatedRun(JobRun):
    """One federated job's driver; ``run()`` returns the summary."""

    def run(self) -> dict[str, Any]:
        # Ray prints raylet notices (a client process died) to stdout; keep it for ``--json``'s one object.
        with contextlib.redirect_stdout(sys.stderr):
            return self._run()

    def _run(self) -> dict[str, Any]:
        spec = self.spec
        started = time.perf_counter()
        with self.ending():
            pruned = settings_for(spec, self.store)
            parent = self._open_parent(pruned)  # before Ray starts, so MLflow's Duration spans the job
            self.store.set_status(self.job_id, "running")
            total = spec.federated.rounds * (2 if spec.federated.dense_reference else 1)
            with report.RoundProgress(total, enabled=self.show_progress) as bar:
                result = self._simulate(pruned, parent, "pruned", bar)
                dense = None
                if spec.federated.dense_reference:
                    dense = self._dense_reference(parent, bar)
            summary = self._summary(pruned, result, dense, parent, time.perf_counter() - started)
            self._log_report(parent, pruned, result, dense, summary)
            return self.succeed(parent, summary.to_dict())

    def _dense_reference(self, parent: str, bar: report.RoundProgress) -> SimulationResult:
        """Dense FedAvg with the same seed, as the child run ``dense-fedavg``."""
        child = self.tracker.start_child(parent, "dense-fedavg")
        self.tracker.log_params(child, {"plan": "dense", "seed": self.spec.federated.seed})
        try:
            dense = self._simulate(settings_for(self.spec, self.store, dense=True), child, "dense", bar)
        except BaseException:
            self.tracker.finish_parent(child, "FAILED")
            raise
        self.tracker.finish_parent(child, "FINISHED")
        return dense

    def _open_parent(self, s: SimulationSettings) -> str:
        fed = self.spec.federated
        params = {
            "task": s.task,
            "plan": s.plan,
            "target_sparsity": s.targets[-1],
            "tiers": ",".join(f"{t:g}" for t in s.targets),
            "metric": s.metric,
            "granularity": s.granularity + (" per row" if s.per_row else ""),
            **pruning_rule(s.granularity, s.per_row, s.metric),
            "allocation": s.allocation if isinstance(s.allocation, str) else "explicit",
            "clients": s.clients,
            "fraction": s.fraction,
            "rounds": s.rounds,
            "local_epochs": s.local_epochs,
            "batch_size": s.batch_size,
            "lr": s.lr or "task default",
            "partition": f"{s.partition_kind}:{s.partition_value:g}" if s.partition_kind != "iid" else "iid",
            "seed": s.seed,
            "ramp_rounds": s.ramp_rounds or max(1, s.rounds // 4),
            "dense_reference": fed.dense_reference,
        }
        run_id = self.tracker.start_parent(self.job_id, params, {"prunehive.kind": "federated"})
        self.store.set_mlflow_run(self.job_id, run_id)
        self.tracker.log_dict(run_id, self.job.spec, "spec.json")
        return run_id

    def _simulate(self, s: SimulationSettings, run_id: str, label: str, bar: report.RoundProgress) -> SimulationResult:
        counters = {"up": 0, "failures": 0}

        def on_round(record: RoundRecord) -> None:
            counters["up"] += record.bytes_up
            counters["failures"] += record.failures
            self.tracker.log_metrics(
                run_id, report.round_metrics(record, counters["up"], counters["failures"]), step=record.round
            )
            bar.update(label, record, counters["failures"])

        connect_ray(self.ray_address)
        result = simulate(s, on_round)
        totals = result.totals()
        self.tracker.log_metrics(run_id, {f"total.{k}": float(v) for k, v in totals.items()})
        return result

    def _summary(
        self,
        s: SimulationSettings,
        result: SimulationResult,
        dense: SimulationResult | None,
        parent: str,
        seconds: float,
    ) -> FederatedSummary:
        last = result.history[-1]
        tiers = [
            Tier(target=t, sparsity=sp, test_accuracy=acc, layers=layers)
            for t, sp, acc, layers in zip(
                result.targets, result.tier_sparsity, last.test_accuracy, result.layer_sparsity, strict=True
            )
        ]
        final = FederatedFinal(
            test_accuracy=last.test_accuracy[-1],
            sparsity=result.tier_sparsity[-1],
            client_accuracy=last.client_accuracy,
            tiers=tiers if len(tiers) > 1 else [],
            layers=None if len(tiers) > 1 else tiers[0].layers,
        )
        traffic = Traffic.from_dict(result.totals())
        reference, gap = None, None
        if dense is not None:
            dense_last = dense.history[-1]
            reference = DenseReference(
                dense_last.test_accuracy[0], dense_last.client_accuracy, Traffic.from_dict(dense.totals())
            )
            gap = dense_last.test_accuracy[0] - last.test_accuracy[-1]
        rule = pruning_rule(s.granularity, s.per_row, s.metric)
        return FederatedSummary(
            job_id=self.job_id,
            status="succeeded",
            task=s.task,
            plan=s.plan,
            per_row=bool(rule["per_row"]),
            rule=str(rule["rule"]),
            final=final,
            traffic=traffic,
            uplink_reduction=traffic.dense_bytes_up / max(traffic.bytes_up, 1),
            rounds=report.history_rows(result.history),
            mlflow_run_id=parent,
            tracking_uri=self.tracking_uri,
            timing={"seconds": seconds},
            dense_reference=reference,
            accuracy_gap=gap,
        )

    def _log_report(
        self,
        parent: str,
        s: SimulationSettings,
        result: SimulationResult,
        dense: SimulationResult | None,
        summary: FederatedSummary,
    ) -> None:
        final = {"final.test_accuracy": summary.final.test_accuracy, "final.sparsity": summary.final.sparsity}
        for t, tier in enumerate(summary.final.tiers):
            final[f"final.tier{t}.test_accuracy"] = tier.test_accuracy
            final[f"final.tier{t}.sparsity"] = tier.sparsity
        final["uplink_reduction"] = summary.uplink_reduction
        if summary.dense_reference is not None:
            final["dense.final.test_accuracy"] = summary.dense_reference.test_accuracy
        self.tracker.log_metrics(parent, final)
        labels = {"pruned": [f"{s.plan} {t:.0%}" for t in result.targets]}
        series: dict[str, list[RoundRecord]] = {"pruned": result.history}
        if dense is not None:
            series["dense"] = dense.history
            labels["dense"] = ["dense FedAvg"]
        self.tracker.log_figure(parent, report.accuracy_vs_round(series, labels), "plots/accuracy_vs_round.png")
        self.tracker.log_figure(parent, report.accuracy_vs_bytes(series, labels), "plots/accuracy_vs_bytes.png")
        self.tracker.log_dict(parent, summary.to_dict(), "summary.json")
