"""Strategy names and how to build them; imports are lazy so optional pieces stay optional."""

from __future__ import annotations

import importlib
from typing import Any

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


def strategy_class(name: str) -> type[Strategy]:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    module, _, attr = STRATEGIES[name].partition(":")
    cls: type[Strategy] = getattr(importlib.import_module(module), attr)
    return cls


def make_strategy(name: str, space: SearchSpace, budget: int, seed: int = 0, **options: Any) -> Strategy:
    """Build a strategy by name; ``options`` are the strategy's own keyword arguments."""
    return strategy_class(name)(space, budget, seed, **options)
