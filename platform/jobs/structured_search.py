"""The driver's side of a structured search: its space from the workers' level grids and latency table.

The latency budget is checked here, once the table exists: a budget below what the fastest model keeping
one block reaches cannot be met by any candidate and is refused in one line. At the end, the best
candidates are timed again and the best one whose second timing holds the budget itself is the search's best.
The search and its heuristics aim ``pruning.latency_margin`` faster than the budget (``aim_budget``), so that what
they place on the budget's edge does not measure under it on the next timing about half the time.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prunehive.platform.jobs.latency_feedback import LatencyFeedback
from prunehive.platform.spec.job import JobSpec
from prunehive.search.halving import top_stage_best
from prunehive.search.space import Layer
from prunehive.search.strategy import Candidate, Strategy
from prunehive.search.structured_space import LatencyTable, StructuredSpace
from prunehive.workers.contracts import Entry, EvalResult, Failed
from prunehive.workers.granularity import Granularity

# Relative error of the table's predicted fraction of dense beyond which the table is not trusted: a
# structured trial whose whole-model timing reads this far over the budget is penalised (the table mispredicts
# it), and the job warns where the best or a baseline misses by more. Smaller misses are timing noise: one model
# timed twice reads up to ~6% apart at batch 1 and ~9% at batch 16 (code-lm-deep, 2 cores).
TABLE_TOLERANCE = 0.2
CONTENDERS = 4  # a latency-budgeted structured search's best candidates timed again at its end


def is_structured(spec: JobSpec) -> bool:
    return Granularity.parse(spec.pruning.granularity).structured


def penalty_budget(spec: JobSpec) -> float | None:
    """The fraction of dense latency over which a trial's measured latency is penalised: the budget itself,
    or for a structured search (whose repair holds the budget exactly on the lookup table, as it places the
    heuristics) the budget plus ``TABLE_TOLERANCE``. Penalised nearer the budget, timing noise decides which
    candidates survive: near it one timing in two reads over (2x, batch 16: ShortGPT's point read 1.98x, then
    1.89x, was penalised at 5% slack and the search lost its best start)."""
    budget = spec.pruning.latency_budget
    return budget * (1.0 + TABLE_TOLERANCE) if budget is not None and is_structured(spec) else budget


def contenders(spec: JobSpec, strategy: Strategy, best: list[Candidate]) -> list[Candidate]:
    """What the end of a search re-evaluates as its best: ``best``, or for a single-objective structured
    search under a latency budget its ``CONTENDERS`` best at the highest stage, best first (``held_budget``
    picks among them)."""
    if spec.pruning.latency_budget is None or strategy.n_objectives != 1 or not is_structured(spec):
        return best
    return top_stage_best(strategy.history, CONTENDERS) or best


def aim_budget(spec: JobSpec) -> float | None:
    """The fraction of dense latency a structured search's repair and its heuristics are placed at: the budget
    less ``pruning.latency_margin`` (1.5x with a 5% margin aims at 1.575x). One model timed twice on 2 cores reads
    up to ~6% apart at batch 1 and ~9% at batch 16, and a result placed on the budget itself measured under it
    on the next timing in 9 of 12 exports at 1.5x (code-lm-deep, 2026-12-07)."""
    budget = spec.pruning.latency_budget
    if budget is None or not is_structured(spec):
        return budget
    return budget / (1.0 + spec.pruning.latency_margin)


def held_budget(front: list[tuple[int, EvalResult]], budget: float | None) -> tuple[int, EvalResult]:
    """The first of ``front`` (best first, by the search's validation) whose latency, timed again, holds
    ``budget`` (``pruning.latency_budget`` itself); where none does, the fastest. Each was chosen partly on one
    timing, and a luckily timed one may measure slower the second time (1.5x, batch 1: a warm start whose trial
    read 1.60x re-timed at 1.26x, within the search's 20% penalty bound, and was the search's best)."""
    if budget is None:
        return front[0]
    timed = [s for s in front if s[1].speedup]
    for scored in timed:
        if 1.0 / scored[1].speedup <= budget:  # type: ignore[operator]
            return scored
    return max(timed, key=lambda s: s[1].speedup or 0.0) if timed else front[0]


def params_target(spec: JobSpec, layers: list[Layer], grids: list[list[float]], dense_params: int) -> float:
    """The share of the sublayers' parameters a candidate must remove: ``pruning.sparsity``, or more where
    ``pruning.params_budget`` (a fraction of the whole dense model) asks for it; refused in one line where
    even the largest removal the grids allow keeps more than the budget."""
    target = spec.pruning.target
    budget = spec.pruning.params_budget
    if budget is None:
        return target
    prunable = sum(layer.params for layer in layers)
    most = sum(layer.params * grid[-1] for layer, grid in zip(layers, grids, strict=True))
    needed = (1.0 - budget) * dense_params
    if needed > most + 1e-9:
        raise ValueError(
            f"pruning.params_budget {budget:g} is below {(dense_params - most) / dense_params:.3f}, the smallest "
            f"share of the {dense_params:,} dense parameters that removing every prunable unit leaves"
        )
    return max(target, needed / prunable)


def structured_space(
    spec: JobSpec, layers: list[Layer], extras: dict[str, Any], dense_params: int | None = None
) -> StructuredSpace:
    """The space over ``layers`` with the worker's ``space_extras`` (grids, latency table, its budget the
    search's aim, ``aim_budget``, kept at or over the one-block floor); ``dense_params``, the whole dense model's
    parameters, turns ``pruning.params_budget`` into the space's target."""
    budget, aim = spec.pruning.latency_budget, aim_budget(spec)
    table = None if extras.get("latency") is None else LatencyTable.from_dict(extras["latency"])
    if table is not None and budget is not None and aim is not None:
        floor = float(extras["one_block_ms"]) / table.dense_ms
        if budget < floor:
            raise ValueError(
                f"pruning.latency_budget {budget:g} is below {floor:.3f}, the fastest a model keeping one "
                f"decoder block reaches ({float(extras['one_block_ms']):.3f} ms of {table.dense_ms:.3f} ms dense)"
            )
        table = replace(table, budget=max(aim, floor))
    total = dense_params if dense_params is not None else sum(layer.params for layer in layers)
    target = params_target(spec, list(layers), extras["grids"], total)
    return StructuredSpace(list(layers), target=target, grids=extras["grids"], latency=table)


def latency_prediction(
    space: StructuredSpace,
    best: Entry,
    baselines: dict[str, Entry | Failed],
    feedback: LatencyFeedback | None = None,
    budget: float | None = None,
) -> dict[str, Any] | None:
    """The lookup table's predicted milliseconds against the whole-model measurement, for the best
    candidate and every baseline (None where the search timed nothing), with the largest relative error of
    the predicted fraction of dense and, above ``TABLE_TOLERANCE``, a warning: a table timed while other
    work ran mispredicts every candidate, and repair then keeps a budget that measurement does not. ``feedback``:
    where the search's trials moved the budget repair held on the table (``feedback`` in the result). ``budget``:
    ``pruning.latency_budget`` (``budget`` in the result; ``aim``, the table's, is what repair held)."""
    table = space.latency
    if table is None:
        return None
    rows = []
    for name, entry in [("best", best), *baselines.items()]:
        if not isinstance(entry, Entry) or entry.latency_ms is None:
            continue
        predicted = space.predicted_ms([entry.layers[n] for n in space.names])
        rows.append(
            {
                "name": name,
                "predicted_ms": predicted,
                "predicted_fraction": None if predicted is None else predicted / table.dense_ms,
                "measured_ms": entry.latency_ms,
                "measured_fraction": None if not entry.speedup else 1.0 / entry.speedup,  # of its paired dense run
            }
        )
    errors = [
        abs(r["predicted_fraction"] - r["measured_fraction"]) / r["measured_fraction"]
        for r in rows
        if r["predicted_fraction"] is not None and r["measured_fraction"]
    ]
    worst = max(errors, default=None)
    out: dict[str, Any] = {"dense_ms": table.dense_ms, "budget": budget or table.budget, "aim": table.budget}
    out["candidates"] = rows
    out["largest_error"] = worst
    if table.probe_scale is not None:  # the whole models timed to calibrate the table when it was built
        out["probe_scale"], out["probe_error"] = table.probe_scale, table.probe_error
    if feedback is not None:
        out["feedback"] = feedback.to_dict()
    if worst is not None and worst > TABLE_TOLERANCE:
        out["warning"] = (
            f"the latency table's predictions miss the whole-model measurements by up to {worst:.0%} (more than "
            f"{TABLE_TOLERANCE:.0%}): the table or the candidates were timed under other load, so the budget held "
            "on the table but not on the measurement; rerun on a quiet machine"
        )
    return out
