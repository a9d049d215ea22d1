"""A search's setup from its spec: the space over the workers' layers, a metric search's fixed
allocation, the objective's name and the strategy with its options (warm start, stages, Optuna storage)."""

from __future__ import annotations

from prunehive.platform.jobs.pool import ActorPool
from prunehive.platform.spec.job import JobSpec
from prunehive.search.registry import make_strategy, strategy_class, strategy_options
from prunehive.search.space import Layer, SearchSpace
from prunehive.search.strategy import Strategy
from prunehive.workers.contracts import WorkerInfo


def build_space(spec: JobSpec, layers: list[Layer]) -> SearchSpace:
    p = spec.pruning
    return SearchSpace(
        list(layers),
        target=p.target,
        budget=p.budget,
        min_density=p.min_density,
        overrides={k: (float(v[0]), float(v[1])) for k, v in p.bounds.items()},
        levels=list(p.levels) if p.solver != "mask" else None,  # a level solver serves only its levels
    )


def fixed_allocation(spec: JobSpec, space: SearchSpace, pool: ActorPool) -> list[float]:
    """A metric search's per-layer sparsities: a heuristic by name, or the spec's own numbers."""
    chosen = spec.pruning.allocation
    if isinstance(chosen, str):
        return [float(v) for v in pool.call_one("allocation", chosen, space.to_dict())]
    unknown = set(chosen) - set(space.names)
    if unknown:
        raise ValueError(f"pruning.allocation: unknown layers {sorted(unknown)}; prunable layers are {space.names}")
    return [float(chosen.get(n, 0.0)) for n in space.names]


def objective_name(spec: JobSpec, info: WorkerInfo) -> str:
    """What a search maximises, named for Optuna's dashboard: ``val_accuracy``, or for a task scored by
    its loss ``val_neg_log_perplexity`` (the objective is minus the mean loss), ``val_neg_kl`` or ``val_neg_loss``."""
    if spec.search.fitness == "kl":
        return "val_neg_kl"
    if info.higher_is_better and spec.search.fitness == "quality":
        return f"val_{info.quality}"
    return "val_neg_log_perplexity" if info.quality == "perplexity" else "val_neg_loss"


def build_strategy(
    spec: JobSpec,
    space: SearchSpace,
    job_id: str,
    store_url: str,
    allocation: list[float] | None = None,
    warm: list[list[float]] | None = None,
    objective: str | None = None,
) -> Strategy:
    options = strategy_options(spec.strategy, spec.search.options)  # the spec checked them; defaults added
    if spec.strategy == "gp-metric":
        options["allocation"] = allocation
    if strategy_class(spec.strategy).warm_startable and spec.search.warm_start and warm:
        options["initial"] = warm
    if spec.search.fidelity is not None:  # stages are recorded on each candidate (meta fidelity, tokens)
        options["fidelity"] = spec.search.fidelity
        options["survivors"] = spec.search.survivors
    if spec.strategy == "bayesian":
        options["storage"] = store_url
        options["study_name"] = f"prunehive-{job_id}"  # the job's study in optuna-dashboard
        if objective is not None:
            options["metric_names"] = [objective]
    return make_strategy(spec.strategy, space, spec.search.budget, spec.search.seed, **options)
