"""One trial of a search as it leaves the driver: the actor's request, the strategy's objective values,
the job store's row and the MLflow child run's params, metrics and tags.

Results stay typed until here; this is where they become JSON for the store and MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prunehive.platform.jobs.summary_types import TrialRow
from prunehive.search.strategy import Candidate, Outcome
from prunehive.workers.contracts import EvalReply, EvalRequest, EvalResult, LatencyRequest
from prunehive.workers.metrics import EXPRESSION_PREFIX

if TYPE_CHECKING:
    from prunehive.platform.spec.job import JobSpec

ChildRun = tuple[dict[str, Any], dict[str, float], dict[str, str]]
LATENCY_PENALTY = 100.0  # objective lost per unit of latency (fraction of dense) over pruning.latency_budget


def request(cand: Candidate, recovery_steps: int = 0, staged: bool = False) -> EvalRequest:
    """What an actor evaluates: the id and sparsities, plus the metric when the candidate is one; in a
    staged search (``search.fidelity``), only the tokens (or samples) of the candidate's stage."""
    metric = f"{EXPRESSION_PREFIX}{cand.expression}" if cand.expression else None
    tokens = cand.meta.get("tokens") if staged else None
    limit = int(tokens) if tokens is not None else None
    return EvalRequest(cand.id, list(cand.sparsity), metric, recovery_steps=recovery_steps, limit=limit)


def stage_steps(spec: JobSpec, cand: Candidate) -> int:
    """Fine-tuning steps before a candidate is scored: its stage's ``search.train_steps`` (training-aware
    selection, structured granularities), else ``pruning.recovery_steps``."""
    steps = spec.search.train_steps
    if steps is None:
        return spec.pruning.recovery_steps
    return steps[min(int(cand.meta.get("fidelity", 0)), len(steps) - 1)]


def latency_request(spec: JobSpec) -> LatencyRequest | None:
    """How workers time candidates: ``search.latency``, or its defaults where latency is an objective or a
    budget; None (no timing, no cost) otherwise."""
    options = spec.search.latency
    if options is None and "latency" not in spec.search.objectives and spec.pruning.latency_budget is None:
        return None
    return LatencyRequest(**options.model_dump()) if options is not None else LatencyRequest()


def objective_values(
    objectives: Sequence[str],
    result: EvalResult,
    dense_flops: int,
    latency_budget: float | None = None,
    fitness: str = "quality",
) -> tuple[float, ...]:
    """What strategies maximise: the validation objective (``fitness`` kl: minus the KL from the dense
    model), plus sparsity, FLOPs saved or measured speedup (NSGA-II). Over ``latency_budget`` (a fraction
    of dense latency) the objective is penalised by ``LATENCY_PENALTY`` per unit of excess, so any
    candidate within budget ranks first."""
    quality = fitness_of(result, fitness)
    if latency_budget is not None and result.speedup is not None and 1.0 / result.speedup > latency_budget:
        quality -= LATENCY_PENALTY * (1.0 / result.speedup - latency_budget)
    values = [quality]
    for extra in objectives[1:]:
        if extra == "latency":
            if result.speedup is None:
                raise ValueError("the latency objective needs results with a measured speedup")
            values.append(result.speedup)
        else:
            values.append(result.achieved_sparsity if extra == "sparsity" else 1.0 - result.flops / dense_flops)
    return tuple(values)


def fitness_of(result: EvalResult, fitness: str = "quality") -> float:
    """The value a search maximises on validation: the task's objective, minus the mean loss, or minus the KL
    from the dense model."""
    if fitness == "loss":
        return -result.metrics["validation"].loss
    if fitness != "kl":
        return result.objective("validation")
    kl = result.metrics["validation"].kl
    if kl is None:
        raise ValueError("search.fitness kl needs results with a KL; the workers hold no dense reference")
    return -kl


def trial_row(cand: Candidate, reply: EvalReply, outcome: Outcome) -> TrialRow:
    """The job store's row of a told candidate, with the values the strategy was told."""
    result = reply.result
    return TrialRow(
        candidate_id=cand.id,
        state=outcome.state,
        candidate=cand,
        result=result,
        error=reply.error,
        worker=reply.worker,
        seconds=result.seconds if result else None,
        outcome=list(outcome.values),
    )


def child_run(layers: Sequence[str], strategy: str, cand: Candidate, result: EvalResult | None) -> ChildRun:
    """An MLflow child run's params, metrics and tags: the same names for every trial and baseline,
    so MLflow's compare views line them up."""
    params: dict[str, Any] = {f"sparsity.{n}": round(v, 6) for n, v in zip(layers, cand.sparsity, strict=True)}
    params.update({"candidate_id": cand.id, "strategy": strategy})
    if cand.expression:
        params["expression"] = cand.expression
    metrics: dict[str, float] = {}
    if result is not None:
        for split, m in result.metrics.items():
            metrics.update({f"{split}.{k}": float(v) for k, v in m.to_dict().items()})
        metrics.update(achieved_sparsity=result.achieved_sparsity, params=result.params, flops=result.flops)
        metrics["seconds"] = result.seconds
        if result.tokens is not None:
            metrics["tokens"] = result.tokens
        if result.latency_ms is not None and result.speedup is not None:
            metrics.update(latency_ms=result.latency_ms, speedup=result.speedup)
    tags = {
        "prunehive.kind": "trial",
        "prunehive.candidate_id": str(cand.id),
        "prunehive.state": "complete" if result is not None else "failed",
    }
    return params, metrics, tags
