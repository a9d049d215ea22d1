"""What the ends of a search and of a metric search share: re-evaluating named candidates on
validation and test, the baselines' child runs and summary entries, the parent run's final
metrics, and the best-so-far plot.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from prunehive.platform.jobs.search.trials import child_run, fitness_of
from prunehive.platform.jobs.summary_types import SearchSummary, TrialRow
from prunehive.platform.jobs.zero_shot import final_evaluation
from prunehive.platform.tracking import plots
from prunehive.search.strategy import Candidate, Strategy
from prunehive.workers.contracts import Entry, EvalReply, EvalRequest, EvalResult, Failed, entry_of
from prunehive.workers.quality import Quality

if TYPE_CHECKING:
    from prunehive.platform.jobs.pool import ActorPool
    from prunehive.platform.jobs.search.driver import SearchRun

SPLITS = ("validation", "test")


@dataclass(frozen=True)
class Named:
    """A candidate to re-evaluate at the end, under the name it is reported by."""

    name: str
    candidate: Candidate
    metric: str | None = None  # the importance metric to rank by, where it is not the worker's own
    recovery: bool = True  # fine-tuned like the candidates (the dense model is scored as it is)


def reevaluate(pool: ActorPool, named: list[Named], recovery_steps: int) -> dict[str, EvalReply]:
    """Each named candidate evaluated on validation and test, spread over the workers."""
    for i, n in enumerate(named):
        req = EvalRequest(i, list(n.candidate.sparsity), n.metric, SPLITS, recovery_steps if n.recovery else 0)
        pool.submit(i % len(pool.actors), [req])
    out: dict[str, EvalReply] = {}
    while not pool.idle:
        for reply in pool.wait(timeout=1.0):
            out[named[reply.candidate_id].name] = reply
    return out


def entries(replies: dict[str, EvalReply]) -> dict[str, Entry | Failed]:
    """Summary entries by name; one the task could not evaluate is reported with its error, not dropped."""
    return {n: entry_of(r) for n, r in replies.items()}


def completed(replies: dict[str, EvalReply]) -> dict[str, EvalResult]:
    return {n: r.result for n, r in replies.items() if r.result is not None}


def log_baselines(run: SearchRun, parent: str, baselines: list[Named], replies: dict[str, EvalReply]) -> None:
    """A child run per evaluated baseline, named like the trials' runs so MLflow compares them."""
    for b in baselines:
        result = replies[b.name].result
        if result is None:
            continue
        params, metrics, tags = child_run(run.space.names, run.spec.strategy, b.candidate, result)
        params["candidate_id"] = b.name
        tags["prunehive.kind"] = "baseline"
        run.tracker.log_child(parent, f"baseline-{b.name}", params, metrics, tags)


def final_metrics(best: EvalResult, baselines: dict[str, EvalResult], quality: Quality) -> dict[str, float]:
    """The parent run's metrics: every score of the best on both splits, the baselines' quality."""
    final = {f"best.{s}.{k}": float(v) for s in SPLITS for k, v in best.metrics[s].to_dict().items()}
    for name, result in baselines.items():
        final.update({f"baseline.{name}.{s}.{quality.name}": result.quality(s) for s in SPLITS})
    return final


def log_best_so_far(
    run: SearchRun, parent: str, strategy: Strategy, baselines: dict[str, EvalResult], quality: Quality
) -> None:
    """The best validation score after each trial, on the task's own scale where it can be (the KL from the
    dense model for ``fitness: kl``, the loss for ``fitness: loss``), with the baselines as horizontal lines;
    against the validation tokens spent so far where the trials recorded them."""
    fitness = run.spec.search.fitness
    higher = quality.higher_is_better and fitness == "quality"
    sign = 1.0 if higher else -1.0
    done = [(c, o) for c, o in strategy.history if o.state == "complete"]
    shown = [sign * o.values[0] for _, o in done]
    lines = {n: sign * fitness_of(r, fitness) for n, r in baselines.items()}
    if fitness == "kl":
        label = "validation KL from dense"
    elif fitness == "loss":
        label = "validation loss"
    else:
        label = f"validation {quality.name}" if higher else "validation loss (log-perplexity)"
    spent = cumulative_tokens(run, strategy)
    tokens = [spent[c.id] for c, _ in done] if spent else None
    figure = plots.best_so_far(shown, higher, lines, label, tokens)
    run.tracker.log_figure(parent, figure, "plots/best_so_far.png")


def trial_tokens(run: SearchRun) -> dict[int, int]:
    """Validation tokens (or samples) each recorded trial was scored on; trials without a count are left out."""
    out = {}
    for t in map(TrialRow.of, run.store.trials(run.job_id)):
        if t.result is not None and t.result.tokens is not None:
            out[t.candidate_id] = t.result.tokens
    return out


def cumulative_tokens(run: SearchRun, strategy: Strategy) -> dict[int, int]:
    """Each told candidate's id to the tokens spent up to and including it, in the order told (empty when
    the trials recorded none)."""
    per_trial = trial_tokens(run)
    if not per_trial:
        return {}
    out, total = {}, 0
    for cand, _ in strategy.history:
        total += per_trial.get(cand.id, 0)
        out[cand.id] = total
    return out


def evaluation_tokens(run: SearchRun, replies: dict[str, EvalReply]) -> int:
    """Validation tokens (or samples) the whole job scored: every trial, plus the final re-evaluations'."""
    final = sum(r.result.tokens or 0 for r in replies.values() if r.result is not None)
    return sum(trial_tokens(run).values()) + final


def final_lm_eval(run: SearchRun, parent: str, summary: SearchSummary) -> SearchSummary:
    """The spec's ``evaluation.lm_eval``, if any: the best candidate and the dense model scored with lm-eval,
    under the summary's ``lm_eval`` key and on the parent run (``lm_eval_<task>_<metric>``)."""
    evaluation = run.spec.evaluation
    if evaluation is None or evaluation.lm_eval is None or summary.best.candidate_id is None:
        return summary
    return replace(summary, lm_eval=final_evaluation(run, parent, summary.best.candidate_id))
