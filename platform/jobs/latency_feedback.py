"""A structured search's latency budget held on measurement: the lookup table's working budget follows what the
search's own trials measure.

Repair holds every candidate within the budget on the table, and every trial is also timed whole. Where the
table overstates what the population's mix of depth and width saves, the search fills the table's budget and
lands under the real one, and it drifts further under as selection keeps the candidates the table flatters
most (the ones it thinks fast that keep the most units). So after each timed trial the driver takes the median,
over the last ``WINDOW`` trials, of measured over predicted saving, and moves the budget that repair holds on
the table to where that saving meets ``pruning.latency_budget`` measured. It only tightens: where trials save more
than predicted, candidates stay within the budget on the table as well as measured. The heuristics are placed
on the table's own budget (they have no selection bias); one that measures over it is placed again at the end
(``search/held_baselines.py``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np

from prunehive.search.structured_space import StructuredSpace, measured_share, table_budget
from prunehive.workers.contracts import EvalResult

WINDOW = 24  # recent timed trials whose measured/predicted saving sets the working budget
MIN_TRIALS = 4  # timed trials before the working budget moves
SCALE_RANGE = (0.7, 1.0)  # the measured/predicted saving ratio is kept within this: the budget only tightens


class LatencyFeedback:
    """Moves ``space.latency.budget`` (the table's, the one repair holds) so the trials measure ``budget``."""

    def __init__(self, space: StructuredSpace, budget: float) -> None:
        if space.latency is None:
            raise ValueError("latency feedback needs the space's latency table")
        self.space, self.budget = space, budget
        self.ratios: deque[float] = deque(maxlen=WINDOW)
        self.scale = 1.0

    def observe(self, vector: list[float], result: EvalResult) -> None:
        """One timed trial: its measured saving against the table's prediction for it."""
        table = self.space.latency
        if table is None or not result.speedup:
            return
        share = measured_share(table, self.space.level_indices(vector), result.speedup)
        if share is None:
            return
        self.ratios.append(share)
        if len(self.ratios) >= MIN_TRIALS:
            self.scale = float(np.clip(np.median(self.ratios), *SCALE_RANGE))
            self.space.latency = replace(table, budget=self.working_budget())

    def working_budget(self) -> float:
        """The table's budget at which a candidate whose saving measures ``scale`` of predicted meets the budget."""
        return min(1.0, table_budget(self.budget, self.scale))

    def restore(self) -> None:
        """The table's own budget again (for the end's heuristics and the summary's prediction check)."""
        if self.space.latency is not None:
            self.space.latency = replace(self.space.latency, budget=self.budget)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "working_budget": self.working_budget(), "trials": len(self.ratios)}
