"""Strategy names, their options models and how to build them; the strategy modules are imported
lazily (optional and heavy pieces stay out of spec validation), the options models eagerly."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import ValidationError

from prunehive.search.options import (
    BayesianOptions,
    EvolutionOptions,
    EvoPressOptions,
    GPMetricOptions,
    NSGA2Options,
    RandomOptions,
    RLOptions,
    StrategyOptions,
)
from prunehive.search.space import SearchSpace
from prunehive.search.strategy import Strategy

STRATEGIES: dict[str, str] = {
    "evolution": "prunehive.search.evolution:EvolutionStrategy",
    "nsga2": "prunehive.search.nsga2:NSGA2Strategy",
    "bayesian": "prunehive.search.bayesian:BayesianStrategy",
    "rl": "prunehive.search.rl:RLStrategy",
    "random": "prunehive.search.random_search:RandomStrategy",
    "evopress": "prunehive.search.evopress:EvoPressStrategy",
    "gp-metric": "prunehive.search.gp:GPMetricStrategy",
}
# Each strategy class names the same model as its ``Options``.
OPTIONS: dict[str, type[StrategyOptions]] = {
    "evolution": EvolutionOptions,
    "nsga2": NSGA2Options,
    "bayesian": BayesianOptions,
    "rl": RLOptions,
    "random": RandomOptions,
    "evopress": EvoPressOptions,
    "gp-metric": GPMetricOptions,
}


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    module, _, attr = STRATEGIES[name].partition(":")
    cls: type[Strategy] = getattr(importlib.import_module(module), attr)
    return cls


def check_options(name: str, options: dict[str, Any], where: str = "search.options") -> dict[str, Any]:
    """``options`` validated against strategy ``name``'s model: the ones given, with their types coerced.
    A typo or a wrong type is a one-line ValueError naming ``where`` and the option."""
    model = OPTIONS[name]
    try:
        checked = model.model_validate(options)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            known = ", ".join(model.model_fields) or "none"
            raise ValueError(f"{where}.{field}: unknown option for strategy {name!r} (known: {known})") from None
        raise ValueError(f"{where}.{field}: {first['msg'].removeprefix('Value error, ')}") from None
    return checked.model_dump(mode="json", exclude_unset=True)


def strategy_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of strategy ``name``: those given (checked), the model's defaults for the rest."""
    return OPTIONS[name].model_validate(options).model_dump()


def make_strategy(name: str, space: SearchSpace, budget: int, seed: int = 0, **options: Any) -> Strategy:
    """Build a strategy by name; ``options`` are the strategy's own keyword arguments."""
    return strategy_class(name)(space, budget, seed, **options)
