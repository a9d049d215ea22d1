"""A task's quality score together with its direction, so no reader re-derives "higher is better".

Tasks name their quality (``accuracy``, ``perplexity``, ...); summaries carry the name and, for a benchmark,
the direction too. Everything that ranks, formats or plots a quality asks this type instead of comparing
the name to ``"accuracy"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

# Qualities where more is better; every one is a fraction of items scored right, shown as a percentage.
# Any other quality (perplexity) is lower-is-better and shown with two decimals.
HIGHER_IS_BETTER = frozenset({"accuracy"})


@dataclass(frozen=True)
class Quality:
    """A quality's name and direction; ``fmt``/``spread``/``scaled`` show it the way every table does."""

    name: str
    higher_is_better: bool

    @classmethod
    def named(cls, name: str) -> Quality:
        """The quality a task reports under ``name``, with the direction that name has (the one place it is ruled)."""
        return cls(name, name in HIGHER_IS_BETTER)

    @property
    def percent(self) -> bool:
        """Shown as a percentage: a higher-is-better quality is a fraction of items scored right."""
        return self.higher_is_better

    @property
    def sign(self) -> float:
        """Multiplies a value so that larger is better (for ``max`` over mixed directions)."""
        return 1.0 if self.higher_is_better else -1.0

    def best(self, values: Iterable[float]) -> float:
        """The best of ``values`` in this quality's direction."""
        return max(values) if self.higher_is_better else min(values)

    def scaled(self, value: float) -> float:
        """The value in the unit tables show: percent points for a percentage, else as it is."""
        return 100.0 * value if self.percent else value

    def fmt(self, value: float | None) -> str:
        """``87.5%`` or ``12.34``; an en dash for a missing or non-finite value."""
        if value is None or not math.isfinite(value):
            return "–"
        return f"{100 * value:.1f}%" if self.percent else f"{value:.2f}"

    def spread(self, std: float) -> str:
        """A standard deviation in the unit ``fmt`` shows the mean in (percent points, or two decimals)."""
        return f"{100 * std:.1f}" if self.percent else f"{std:.2f}"

    def of_objective(self, objective: float) -> float:
        """A validation objective in this quality's units: the objective is the quality where higher is
        better, else minus the mean loss (so the quality, a perplexity, is its negated exponential)."""
        if self.higher_is_better:
            return objective
        return math.exp(-objective) if math.isfinite(objective) else math.nan
