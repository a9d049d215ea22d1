"""The evaluation worker of a federated search: an ``EvalWorker`` whose engine scores on Flower clients.

Everything else (batches of requests, per-candidate failures, baselines, export, latency) is the
central worker's, so every strategy, the trial records and resume work unchanged.
"""

from __future__ import annotations

from typing import Any

from prunehive.workers.actor import EvalWorker
from prunehive.workers.build import EngineSpec
from prunehive.workers.engine import PruningEngine
from prunehive.workers.federated.federated_eval import FederatedEngine, FederatedEvaluation
from prunehive.workers.quiet import quiet_flower
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.base import seed_everything


class FederatedEvalWorker(EvalWorker):
    """``EvalWorker(*args, federated=settings, **kwargs)``: the same worker, federated evaluation."""

    def __init__(self, *args: Any, federated: FederatedEvaluation, **kwargs: Any) -> None:
        quiet_flower()
        self.federated = federated
        super().__init__(*args, **kwargs)

    def make_engine(self, spec: EngineSpec) -> PruningEngine:
        return build_federated_engine(spec, self.federated)


def build_federated_engine(spec: EngineSpec, settings: FederatedEvaluation) -> FederatedEngine:
    """As ``workers.build.build_engine`` (seeded, the same task), with the clients' statistics and scores:
    a federated search's workers and ``prunehive export`` of its candidates build this one."""
    seed_everything(spec.seed)
    task = load_task(spec.task, seed=spec.seed)
    return FederatedEngine(
        task,
        settings,
        spec.metric,
        spec.granularity,
        spec.per_row,
        spec.calibration_batches,
        spec.seed,
        spec.device,
        spec.with_grads,
    )
