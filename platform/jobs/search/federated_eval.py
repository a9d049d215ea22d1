"""Which evaluation worker a search places: the central ``EvalWorker``, or, for ``search.evaluation:
federated``, the worker that scores candidates on Flower clients, with its settings from ``federated:``.
Everything else about the search (strategies, trials, MLflow child runs, resume) is the same either way."""

from __future__ import annotations

from typing import Any

from prunehive.platform.spec.job import JobSpec
from prunehive.workers.actor import EvalWorker
from prunehive.workers.build import EngineSpec, build_engine
from prunehive.workers.engine import PruningEngine
from prunehive.workers.federated.federated_eval import FederatedEvaluation
from prunehive.workers.federated.search_worker import FederatedEvalWorker, build_federated_engine
from prunehive.workers.granularity import Granularity
from prunehive.workers.structure.worker import StructuredEvalWorker


def federated_settings(spec: JobSpec) -> FederatedEvaluation:
    """The clients, their data split and sampling, and the recovery rounds, from the spec."""
    fed = spec.federated
    return FederatedEvaluation(
        task=spec.task_ref,
        task_seed=spec.seed,
        clients=fed.clients,
        eval_fraction=fed.eval_fraction,
        stages=tuple(spec.search.fidelity or ()),
        recovery_rounds=fed.recovery_rounds,
        fraction=fed.fraction,
        local_epochs=fed.local_epochs,
        batch_size=fed.batch_size,
        lr=fed.lr,
        partition_kind=fed.partition_kind,
        partition_value=fed.partition_value,
        seed=fed.seed,
    )


def engine_for(spec: JobSpec, engine_spec: EngineSpec) -> PruningEngine:
    """The engine a job's workers built: central, or scoring on the clients (what ``prunehive export`` rebuilds)."""
    if spec.search.evaluation == "federated":
        return build_federated_engine(engine_spec, federated_settings(spec))
    return build_engine(engine_spec)


def worker_class(spec: JobSpec) -> type[EvalWorker]:
    if Granularity.parse(spec.pruning.granularity).structured:
        return StructuredEvalWorker
    return FederatedEvalWorker if spec.search.evaluation == "federated" else EvalWorker


def worker_options(spec: JobSpec) -> dict[str, Any]:
    """The extra keyword the federated worker takes (none for a central search)."""
    return {"federated": federated_settings(spec)} if spec.search.evaluation == "federated" else {}
