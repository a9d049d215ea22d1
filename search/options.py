"""Each strategy's own options (``search.options``) and capabilities, checked when a spec is read.

The models live apart from the strategies because a spec is validated where torch, optuna and deap
are not imported (the API server); each strategy class names its model as ``Options`` and takes its
``warm_startable`` and ``multi_fidelity`` from it. Fields are the constructors' keyword arguments a
user sets; what the search driver supplies (``initial``, ``fidelity``, ``survivors``, ``allocation``,
``storage``, ``study_name``, ``metric_names``) comes from the rest of the spec and is not an option.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_SEEDS = ("abs(W)", "mul(abs(W),X)", "abs(mul(W,G))")  # gp-metric's first asks: magnitude, wanda, snip


class StrategyOptions(BaseModel):
    """Base: an unknown option is an error; the capabilities say what the driver may pass besides."""

    model_config = ConfigDict(extra="forbid")

    warm_startable: ClassVar[bool] = False  # takes ``initial`` vectors (search.baselines' allocations)
    multi_fidelity: ClassVar[bool] = False  # takes search.fidelity / search.survivors


class EvolutionOptions(StrategyOptions):
    warm_startable = True
    multi_fidelity = True

    population: int = Field(16, ge=1, description="Parent pool size (at most the budget).")
    cxpb: float = Field(0.7, ge=0, le=1, description="Probability a child comes from blend crossover.")
    mutpb: float = Field(0.3, ge=0, le=1, description="Probability of mutation (always without crossover).")
    sigma: float = Field(0.1, ge=0, description="Gaussian mutation's standard deviation, in sparsity units.")
    indpb: float | None = Field(None, gt=0, le=1, description="Per-layer mutation probability (default 2/layers).")
    alpha: float = Field(0.3, ge=0, description="cxBlend's extrapolation range.")
    tournsize: int = Field(3, ge=1, description="Tournament size for parents and for the member replaced.")
    elitism: int = Field(2, ge=0, description="Best pool members never replaced.")
    mutation: Literal["gaussian", "switch"] | None = Field(
        None, description="gaussian, or switch (a level up and one down); default switch over levels."
    )
    rung: int | None = Field(None, ge=1, description="First-stage candidates per generation (default population).")


class NSGA2Options(StrategyOptions):
    warm_startable = True

    population: int = Field(16, ge=1, description="Individuals per generation (at most the budget).")
    cxpb: float = Field(0.9, ge=0, le=1, description="Probability a pair of parents is recombined by SBX.")
    eta_cx: float = Field(20.0, gt=0, description="SBX distribution index (larger: children nearer parents).")
    eta_mut: float = Field(20.0, gt=0, description="Polynomial mutation's distribution index.")
    indpb: float | None = Field(None, gt=0, le=1, description="Per-gene mutation probability (default 1/(layers+1)).")
    min_target: float | None = Field(None, description="Lowest target-sparsity gene (default target - 0.2).")
    max_target: float | None = Field(None, description="Highest target-sparsity gene (default target).")


class EvoPressOptions(StrategyOptions):
    warm_startable = True
    multi_fidelity = True

    offspring: int | None = Field(None, ge=1, description="Offspring per generation (default from the layers).")
    switches: int | None = Field(None, ge=1, description="Most level switches per offspring (default from layers).")
    step: float = Field(0.05, gt=0, description="Sparsity a switch moves in a continuous space.")
    reevaluate_parent: bool = Field(False, description="Score the parent again every generation (fresh data).")


class BayesianOptions(StrategyOptions):
    warm_startable = True
    multi_fidelity = True

    sampler: Literal["tpe", "gp"] = Field("tpe", description="optuna's TPE (multivariate) or GP sampler.")
    n_startup_trials: int = Field(10, ge=0, description="Random trials before the sampler models.")
    rung: int | None = Field(None, ge=1, description="Fresh trials per rung (default twice survivors[0]).")


class RLOptions(StrategyOptions):
    warm_startable = True

    warmup: int | None = Field(None, ge=0, description="Random episodes first (default budget/5, 1..10).")
    hidden: int = Field(64, ge=1, description="Width of the actor's and critic's hidden layers.")
    lr_actor: float = Field(3e-4, gt=0, description="Actor learning rate.")
    lr_critic: float = Field(2e-3, gt=0, description="Critic learning rate.")
    noise: float = Field(0.15, ge=0, description="Exploration noise's standard deviation.")
    noise_decay: float | None = Field(None, gt=0, le=1, description="Per-episode decay (default: to 0.1x).")
    updates_per_tell: int = Field(8, ge=0, description="Gradient steps per told episode.")
    batch_size: int = Field(64, ge=1, description="Replay minibatch size.")
    buffer_size: int = Field(4000, ge=1, description="Replay buffer capacity.")
    baseline_decay: float = Field(0.9, ge=0, lt=1, description="Unused (rewards are gains over the prior).")
    spread: float = Field(0.3, gt=0, description="Half-width of the action band around the prior.")
    prior_weight: float = Field(10.0, ge=0, description="Pull of the actor towards keeping the prior.")


class RandomOptions(StrategyOptions):
    multi_fidelity = True

    distribution: Literal["uniform", "target"] = Field(
        "uniform", description="uniform in each layer's bounds, or target + Normal(0, spread)."
    )
    spread: float = Field(0.15, gt=0, description="Standard deviation of the target distribution.")
    rung: int | None = Field(None, ge=1, description="Fresh first-stage candidates per rung (default 2x survivors[0]).")


class GPMetricOptions(StrategyOptions):
    population: int = Field(20, ge=1, description="Pool size.")
    cxpb: float = Field(0.7, ge=0, le=1, description="Probability of one-point crossover.")
    mutpb: float = Field(0.3, ge=0, le=1, description="Probability of mutation after crossover.")
    min_depth: int = Field(1, ge=0, description="Random trees' least depth.")
    max_depth: int = Field(3, ge=0, description="Random trees' greatest depth.")
    max_height: int = Field(8, ge=1, description="Bloat limit: tree height.")
    max_nodes: int = Field(40, ge=1, description="Bloat limit: nodes per tree.")
    tournsize: int = Field(3, ge=1, description="Tournament size for parents and for the member replaced.")
    elitism: int = Field(2, ge=0, description="Best pool members never replaced.")
    constants: tuple[float, ...] = Field((0.5, 1.0, 2.0), description="The fixed numeric terminals.")
    seed_expressions: tuple[str, ...] = Field(DEFAULT_SEEDS, description="Formulas asked first.")
    max_retries: int = Field(20, ge=1, description="Children tried before a random tree is injected.")
