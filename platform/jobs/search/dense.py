"""The unpruned model next to a search's results: every results table starts from it.

The dense model is re-evaluated with the baselines, by the same workers on the same splits, as the
candidate of all zeros: a worker swaps no weight in for it (whatever the solver) and never fine-tunes
it, so its entry is the model as the task supplied it, in the shape of a baseline's entry.
"""

from __future__ import annotations

from prunehive.platform.jobs.search.finish import SPLITS, Named
from prunehive.platform.spec.job import JobSpec
from prunehive.search.strategy import Candidate
from prunehive.workers.contracts import Entry, EvalReply, Failed, entry_of
from prunehive.workers.granularity import pruning_rule

DENSE = "dense"


def dense_named(layers: int) -> Named:
    """The dense model as a candidate to re-evaluate: no layer pruned, no recovery fine-tuning."""
    return Named(DENSE, Candidate(-1, [0.0] * layers), recovery=False)


def dense_entry(reply: EvalReply) -> Entry | Failed:
    """The summary's ``dense`` entry; a failed evaluation is reported with its error, as a baseline's is."""
    return entry_of(reply)


def dense_metrics(reply: EvalReply) -> dict[str, float]:
    """The parent run's ``dense.<split>.<score>`` metrics, named like its ``best.<split>.<score>``."""
    if reply.result is None:
        return {}
    return {f"{DENSE}.{s}.{k}": float(v) for s in SPLITS for k, v in reply.result.metrics[s].to_dict().items()}


def rule_of(spec: JobSpec) -> dict[str, bool | str]:
    """The effective ``per_row`` and the comparison ``rule`` of a job's pruning, for summaries and MLflow."""
    p = spec.pruning
    return pruning_rule(p.granularity, p.per_row, p.metric)


def rule_fields(spec: JobSpec) -> tuple[bool, str]:
    """``rule_of`` as a summary's ``per_row`` and ``rule`` fields."""
    rule = rule_of(spec)
    return bool(rule["per_row"]), str(rule["rule"])
