"""A structured search's latency budget held on measurement: the lookup table's working copy follows what the
search's own trials measure.

Repair holds every candidate within the budget on the table, and every trial is also timed whole. The table
times each change in every block at once, and a search's mixes save differently: at batch 1 on code-lm-deep,
fitted over a search's 80 trials, whole sublayers removed saved ~1.3 times what the table predicts and partly
thinned ones ~0.6 times. Selection keeps the candidates the table flatters most (the ones it thinks fast that
keep the most units), so a search on the table alone drifts under the real budget, and one scale for the whole
table (the median of measured over predicted saving) holds it by also over-charging whole removals, which is
what depth pruning is made of. So after each timed trial the driver fits, over the last ``WINDOW`` trials, one
scale for the table's whole-sublayer changes and one for its partial ones (least squares on measured saving,
drawn towards the median scale), and repair holds the budget on the table so rescaled (``working``).
The heuristics are placed on the table's own numbers (they have no selection bias); one that measures off the
budget is placed again at the end (``search/held_baselines.py``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np

from prunehive.search.structured_space import LatencyTable, StructuredSpace, measured_share, table_budget
from prunehive.workers.contracts import EvalResult

WINDOW = 48  # recent timed trials the scales are fitted on
MIN_TRIALS = 4  # timed trials before the working table moves
SCALE_RANGE = (0.7, 1.0)  # the median measured/predicted saving, which moves the table's budget, only tightens
GROUP_RANGE = (0.5, 1.5)  # each fitted scale of the job's table: whole removals may save more than predicted
PRIOR_ROWS = 2.0  # the median scale counts as this many trials in the fit (draws ill-pinned scales towards it)


def removes_whole(deltas: list[float], level: int) -> bool:
    """Whether ``level`` of a sublayer whose table row is ``deltas`` removes it whole (its grid's last level)."""
    return 0 < level == len(deltas) - 1


def split_saving(table: LatencyTable, indices: list[int]) -> tuple[float, float]:
    """The table's predicted saving (share of dense) from whole sublayers removed and from partly thinned ones."""
    whole = partial = 0.0
    for d, j in zip(table.deltas, indices, strict=True):
        if removes_whole(d, j):
            whole -= d[j]
        else:
            partial -= d[j]
    return whole / table.dense_ms, partial / table.dense_ms


def fit_scales(rows: list[tuple[float, float, float]], prior: float) -> tuple[float, float]:
    """Scales (whole, partial) so that ``whole * W + partial * P`` fits each row's measured saving ``M``,
    ridge-drawn towards ``prior`` (rows with little of one kind cannot pin its scale)."""
    x = np.array([[w, p] for w, p, _ in rows])
    m = np.array([r[2] for r in rows])
    gram = x.T @ x
    ridge = PRIOR_ROWS * max(float(np.trace(gram)) / (2.0 * len(rows)), 1e-12)
    a, b = np.linalg.solve(gram + ridge * np.eye(2), x.T @ m + ridge * prior)
    return float(np.clip(a, *GROUP_RANGE)), float(np.clip(b, *GROUP_RANGE))


class LatencyFeedback:
    """Keeps ``space.latency`` (the table repair holds) a working copy of the job's table rescaled to what the
    trials measure: whole-sublayer and partial changes each by their fitted scale over ``scale``, and the
    budget moved by ``scale`` (the median measured/predicted saving), so a candidate meets it where its
    rescaled saving reaches ``budget``."""

    def __init__(self, space: StructuredSpace, budget: float) -> None:
        if space.latency is None:
            raise ValueError("latency feedback needs the space's latency table")
        self.space, self.budget, self.table = space, budget, space.latency
        self.ratios: deque[float] = deque(maxlen=WINDOW)
        self.rows: deque[tuple[float, float, float]] = deque(maxlen=WINDOW)
        self.scale, self.scales = 1.0, (1.0, 1.0)

    def observe(self, vector: list[float], result: EvalResult) -> None:
        """One timed trial: its measured saving against the job's table's prediction for it."""
        if not result.speedup:
            return
        indices = self.space.level_indices(vector)
        share = measured_share(self.table, indices, result.speedup)
        if share is None:
            return
        self.ratios.append(share)
        self.rows.append((*split_saving(self.table, indices), 1.0 - 1.0 / result.speedup))
        if len(self.ratios) >= MIN_TRIALS:
            median = float(np.median(self.ratios))
            self.scale = float(np.clip(median, *SCALE_RANGE))
            self.scales = fit_scales(list(self.rows), median)
            self.space.latency = self.working()

    def working(self) -> LatencyTable:
        """The job's table with its changes rescaled per group (over ``scale``) and its budget moved by ``scale``."""
        whole, partial = (s / self.scale for s in self.scales)
        deltas = [[v * (whole if removes_whole(d, j) else partial) for j, v in enumerate(d)] for d in self.table.deltas]
        return replace(self.table, deltas=deltas, budget=self.working_budget())

    def working_budget(self) -> float:
        """The table's budget at which a candidate whose saving measures ``scale`` of predicted meets the budget."""
        return min(1.0, table_budget(self.budget, self.scale))

    def restore(self) -> None:
        """The job's own table again (for the end's heuristics and the summary's prediction check)."""
        self.space.latency = replace(self.table, budget=self.budget)

    def to_dict(self) -> dict[str, Any]:
        whole, partial = self.scales
        return {
            "scale": self.scale,
            "working_budget": self.working_budget(),
            "trials": len(self.ratios),
            "whole_scale": whole,
            "partial_scale": partial,
        }
