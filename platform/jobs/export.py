"""``prunehive export``: a finished job's candidate, as files a user loads without prunehive.

The candidate comes from the job store exactly as the job evaluated it: its per-layer sparsities (and,
for a metric search, its expression) from its trial row. The model is rebuilt in this process the way a
worker built it (``workers/build.py``, from the spec's task, metric, granularity, calibration and seed) and
exported as the worker exports the model the job logs to MLflow (``PruningEngine.export``): pruned weights
zeroed in plain parameters (no ``torch.nn.utils.prune`` reparametrisation, so any loader reads the result),
fine-tuned where the job fine-tuned, and for ``channel`` the physically smaller model (except in a Hugging
Face directory, whose config holds one width per kind of layer: there removed channels are zeroed).
Evaluating the written model on the task's validation split therefore gives the trial's recorded quality.
A structured search's candidate (``head``, ``block``, ``structured``) is the physically smaller model in
every format, Hugging Face directories included (``export_structured.py``).

``prunehive.json`` and ``--json`` carry the candidate's test scores too (``test_metrics``): as the job's
summary reports them where it lists the candidate (its best, Pareto front or leaderboard), else scored
here on the test split of the rebuilt model (trials are scored on validation only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from prunehive.platform.jobs.export_formats import FORMATS, write_hf, write_recipe, write_torch
from prunehive.platform.jobs.export_result import Chosen, Exported
from prunehive.platform.jobs.export_structured import check_structured_format, export_structured
from prunehive.platform.jobs.search.federated_eval import engine_for
from prunehive.platform.jobs.structured_search import is_structured
from prunehive.platform.jobs.summary_types import SearchSummary, TrialRow
from prunehive.platform.spec.job import JobSpec, parse_spec
from prunehive.platform.store.jobs import JobRecord, JobStore, TrialRecord
from prunehive.workers.build import EngineSpec
from prunehive.workers.kl import score_splits
from prunehive.workers.metrics import EXPRESSION_PREFIX
from prunehive.workers.solvers.level_engine import LevelEngine, open_database
from prunehive.workers.tasks.base import Task
from prunehive.workers.tasks.spec import HFTaskSpec

SEARCH_KINDS = ("search", "metric-search")


def _candidate_id(job: JobRecord, which: str) -> int:
    if which == "best":
        best = SearchSummary.from_dict(job.summary).best.candidate_id if job.summary else None
        if best is None:
            raise ValueError(f"job {job.id} has no best candidate ({job.status}); name a trial with --candidate ID")
        return best
    try:
        return int(which)
    except ValueError:
        raise ValueError(f"--candidate: expected best or a trial's candidate id, got {which!r}") from None


def choose(job: JobRecord, spec: JobSpec, trials: list[TrialRecord], which: str) -> Chosen:
    """The candidate ``which`` names (``best`` or a candidate id) of a finished search job."""
    if job.kind not in SEARCH_KINDS:
        raise ValueError(f"job {job.id} is a {job.kind} job; only search and metric-search jobs have candidates")
    if job.status in ("queued", "running"):
        raise ValueError(f"job {job.id} is {job.status}; export it once it has finished")
    return trial_candidate(job, spec, trials, _candidate_id(job, which))


def trial_candidate(job: JobRecord, spec: JobSpec, trials: list[TrialRecord], cid: int) -> Chosen:
    """Trial ``cid`` of a search job as the job recorded it; also while the job ends (its final evaluation)."""
    record = next((t for t in trials if t.candidate_id == cid), None)
    if record is None:
        raise ValueError(f"job {job.id} has no trial with candidate id {cid}")
    trial = TrialRow.of(record)
    if trial.state != "complete" or trial.result is None:
        raise ValueError(f"candidate {cid} of job {job.id} did not complete: {trial.error}")
    names = list(trial.result.layers)  # the workers' layer order, as the trial recorded it
    vector = trial.candidate.sparsity
    if len(vector) != len(names):
        raise ValueError(f"candidate {cid} of job {job.id} has {len(vector)} sparsities for {len(names)} layers")
    expression = trial.candidate.expression
    metric = f"{EXPRESSION_PREFIX}{expression}" if expression else spec.pruning.metric
    return Chosen(cid, dict(zip(names, vector, strict=True)), metric, trial.result)


def _empty_dir(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {str(out)!r} is not an empty directory")
    return out


def recorded_test(job: JobRecord, candidate_id: int) -> dict[str, float] | None:
    """The candidate's test scores as the job's summary reports them, or None where it does not list it."""
    entry = SearchSummary.from_dict(job.summary).listed(candidate_id) if job.summary else None
    test = entry.metrics.get("test") if entry is not None else None
    return test.to_dict() if test is not None else None


def scored_test(task: Any, model: Any) -> dict[str, float]:
    """The test split's scores of an exported model, by the task's own evaluation (as a worker scores)."""
    return score_splits(task, model, ("test",))["test"].to_dict()


def engine_spec(spec: JobSpec) -> EngineSpec:
    """The engine a job's workers built, from its spec (``EvalWorker`` gets the same fields)."""
    p = spec.pruning
    with_grads = True if spec.kind == "metric-search" else None  # as the job's workers were built
    return EngineSpec(
        spec.task, p.metric, p.granularity, p.per_row, p.calibration_batches, spec.seed, with_grads=with_grads
    )


def rebuilt(spec: JobSpec, chosen: Chosen, shrink: bool = False) -> tuple[nn.Module, Task]:
    """The candidate's model as the job's worker exports it (``EvalWorker.export``, the model logged to
    MLflow): pruned weights zeroed, or a solver's level database weights (``solver: sparsegpt``); fine-tuned
    where the job fine-tuned its candidates; for ``channel`` with ``shrink``, physically smaller. The task
    comes with it, to score the model."""
    p = spec.pruning
    engine = engine_for(spec, engine_spec(spec))  # a federated search's: statistics from its clients
    if engine.names != list(chosen.sparsity):
        raise ValueError(f"the task's prunable layers changed since the job ran: {engine.names}")
    engine.use_metric(chosen.metric)
    if p.solver != "mask" and not chosen.metric.startswith(EXPRESSION_PREFIX):  # as the workers chose
        levels = LevelEngine(engine, open_database(engine, p.solver, p.levels, p.calibration_batches))
        model = levels.export(chosen.sparsity, p.recovery_steps)
    else:
        model = engine.export(chosen.sparsity, p.recovery_steps, shrink=shrink)
    return model.cpu().eval(), engine.task


def export_candidate(
    store: JobStore,
    job_id: str,
    which: str = "best",
    out: str | Path = ".",
    fmt: str | None = None,
    healed: bool = False,
) -> dict[str, Any]:
    """Write candidate ``which`` of job ``job_id`` to ``out`` (``healed``: a structured search's candidate
    after its ``pruning.recovery``); returns what ``--json`` prints."""
    job = store.get_job(job_id)
    spec = parse_spec(job.spec)
    hf_task = spec.task if isinstance(spec.task, HFTaskSpec) else None
    structured = is_structured(spec)  # heads, channels or blocks removed: the physically smaller model
    fmt = fmt or ("hf" if hf_task or structured else "torch")
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if structured:
        check_structured_format(fmt, spec.pruning.granularity)
    elif healed:
        raise ValueError(f"--healed: job {job.id} is not a head, block or structured search; nothing was healed")
    elif fmt == "hf" and hf_task is None:
        raise ValueError(f"--format hf needs an hf: task; job {job.id} prunes {spec.task!r} (use torch or recipe)")
    if fmt == "recipe" and spec.pruning.granularity == "channel":
        raise ValueError("--format recipe: llm-compressor's pruning modifiers take unstructured or N:M sparsity")
    chosen = choose(job, spec, store.trials(job.id), which)
    target = _empty_dir(Path(out).expanduser().resolve())
    test = recorded_test(job, chosen.candidate_id)
    if structured:
        return export_structured(job, spec, chosen, fmt, target, test, healed)
    # A Hugging Face config.json holds one width per kind of layer: a channel candidate is written there at
    # its dense shapes, removed channels zeroed; every other form is the physically smaller model.
    shrink = fmt != "hf"
    model, task = rebuilt(spec, chosen, shrink) if fmt != "recipe" or test is None else (None, None)
    if test is None:
        test = scored_test(task, model)
    recorded = chosen.result
    metrics = {split: m.to_dict() for split, m in recorded.metrics.items()}
    info = {
        "job_id": job.id,
        "candidate_id": chosen.candidate_id,
        "format": fmt,
        "metric": chosen.metric,
        "granularity": spec.pruning.granularity,
        "per_row": spec.pruning.per_row,
        "sparsity": chosen.sparsity,
        "achieved_sparsity": recorded.achieved_sparsity,
        "layers": dict(recorded.layers),
        "metrics": metrics,
        "test_metrics": test,
        "spec": job.spec,
    }
    if fmt == "recipe":
        measured = {name: recorded.layers[name] for name in chosen.sparsity}  # the job's layer order
        files = write_recipe(measured, chosen.metric, spec.pruning.granularity, target, info, spec.pruning.solver)
    elif hf_task is not None and fmt == "hf":
        files = write_hf(model, hf_task, target, info)
    else:
        files = write_torch(model, target, info)
    return Exported(job.id, chosen, fmt, target, files, spec.pruning.granularity, metrics, test).to_dict()
