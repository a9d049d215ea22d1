"""The end of a structured search under ``pruning.recovery``: the best candidate and every baseline healed
the same way (same steps, learning rate and loss, on the same calibration batches), each entry gaining its
quality after healing next to its one-shot quality, so the comparison stays fair.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import ray

from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.platform.spec.job import JobSpec
from prunehive.search.space import SearchSpace
from prunehive.workers.contracts import Entry, Healed

if TYPE_CHECKING:
    from prunehive.platform.jobs.pool import ActorPool


def healed_summary(spec: JobSpec, pool: ActorPool, space: SearchSpace, summary: SearchSummary) -> SearchSummary:
    """``summary`` with ``healed`` set on its best and (unless ``recovery.baselines`` is false) on each evaluated
    baseline, healed across the workers."""
    recovery = spec.pruning.recovery
    if recovery is None:
        return summary
    named: list[tuple[str, Entry]] = [("best", summary.best)]
    if recovery.baselines:
        named += [(n, e) for n, e in summary.baselines.items() if isinstance(e, Entry)]
    refs = [
        pool.actors[i % len(pool.actors)].heal.remote(
            [e.layers[n] for n in space.names], recovery.steps, recovery.lr, recovery.distill
        )
        for i, (_, e) in enumerate(named)
    ]
    healed: dict[str, Entry] = {}
    for (name, entry), (result, lr) in zip(named, ray.get(refs), strict=True):
        healed[name] = replace(entry, healed=Healed(dict(result.metrics), recovery.steps, lr, recovery.distill))
    baselines = {n: healed.get(n, e) for n, e in summary.baselines.items()}
    return replace(summary, best=healed["best"], baselines=baselines)


def healed_metrics(summary: SearchSummary) -> dict[str, float]:
    """The parent run's metrics of the healed entries (``healed.best.test.perplexity``, ...)."""
    out: dict[str, Any] = {}
    for name, entry in [("best", summary.best), *summary.baselines.items()]:
        if isinstance(entry, Entry) and entry.healed is not None:
            for split, m in entry.healed.metrics.items():
                out[f"healed.{name}.{split}.{m.quality_name}"] = m.quality
    return out
