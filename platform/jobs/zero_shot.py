"""Which model ``prunehive eval`` and a search's final evaluation hand to lm-eval, and where the scores go.

A job's candidate is rebuilt by ``export.rebuilt`` (the same masks, solver weights and recovery as the
job's workers used), the dense model is the task's own, and an exported directory is loaded as written.
Scores go to the job's MLflow parent run as ``lm_eval_<task>_<metric>`` for the best candidate,
``dense.lm_eval_...`` for the dense model and ``candidate_<id>.lm_eval_...`` for any other trial.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunehive.platform.jobs.export import SEARCH_KINDS, choose, rebuilt, trial_candidate
from prunehive.platform.jobs.export_result import Chosen
from prunehive.platform.jobs.lm_eval import LMEvalOptions, evaluate_model, load_tasks, mlflow_metrics, task_manager
from prunehive.platform.spec.job import JobSpec, parse_spec
from prunehive.platform.store.jobs import JobRecord, JobStore
from prunehive.platform.tracking.location import default_tracking_uri
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.hf_lm import CausalLMBlocks
from prunehive.workers.tasks.hf_load import load_causal_lm, load_tokenizer

if TYPE_CHECKING:
    from prunehive.platform.jobs.search.driver import SearchRun

EXPORT_INFO = "prunehive.json"


def causal_task(spec: JobSpec) -> Any:
    """The job's task (built lazily: nothing loaded yet), if its model is a Hugging Face causal LM."""
    task = load_task(spec.task, seed=spec.seed)
    if not isinstance(task, CausalLMBlocks):
        raise ValueError(f"lm-eval scores causal language models; task {spec.task} is not one (code-lm or hf: are)")
    return task


def tokenizer_of(task: Any) -> Any:
    return load_tokenizer(task.directory())


def metric_prefix(job: JobRecord, candidate: int | str) -> str:
    """Where a model's scores go on the parent run: the job's best unprefixed, as the final evaluation logs it."""
    if candidate == "dense":
        return "dense."
    best = (job.summary or {}).get("best") or {}
    return "" if best.get("candidate_id") == candidate else f"candidate_{candidate}."


def log_scores(spec: JobSpec, run_id: str | None, metrics: dict[str, float]) -> None:
    if run_id is None or not metrics:
        return
    # local: keeps mlflow out of preflight (spec checking)
    from prunehive.platform.tracking.tracker import Tracker  # local: keeps mlflow out of preflight (spec checking)

    Tracker(spec.tracking.mlflow_uri or default_tracking_uri(), spec.experiment).log_metrics(run_id, metrics)


def _models(job: JobRecord, spec: JobSpec, store: JobStore, which: str) -> tuple[Any, Any, int | str]:
    """(model, tokenizer, candidate id or ``dense``) for ``--candidate``."""
    if job.kind not in SEARCH_KINDS:
        raise ValueError(f"job {job.id} is a {job.kind} job; only search and metric-search jobs have candidates")
    task = causal_task(spec)
    if which == "dense":
        return task.load_model().eval(), tokenizer_of(task), "dense"
    chosen = choose(job, spec, store.trials(job.id), which)
    model, task = rebuilt(spec, chosen)
    return model, tokenizer_of(task), chosen.candidate_id


def evaluate_job(store: JobStore, job_id: str, which: str, options: LMEvalOptions) -> dict[str, Any]:
    """``prunehive eval JOB``: candidate ``which`` (``best``, ``dense`` or a trial's id) on the tasks; the
    scores are logged to the job's parent run and returned as ``--json`` prints them."""
    job = store.get_job(job_id)
    spec = parse_spec(job.spec)
    manager = task_manager(options)  # unknown task names fail before any model is built
    model, tokenizer, candidate = _models(job, spec, store, which)
    results = evaluate_model(model, tokenizer, options, load_tasks(options, manager))
    metrics = mlflow_metrics(results, metric_prefix(job, candidate))
    log_scores(spec, job.mlflow_run_id, metrics)
    return _report(job.id, candidate, options, results, job.mlflow_run_id, metrics)


def evaluate_export(store: JobStore | None, directory: Path, options: LMEvalOptions) -> dict[str, Any]:
    """``prunehive eval DIR``: a directory written by ``prunehive export --format hf``; logged to its job's
    parent run where that job is in this job store."""
    info_path = directory / EXPORT_INFO
    if not info_path.is_file() or not (directory / "config.json").is_file():
        raise ValueError(f"{str(directory)!r} is not a directory written by `prunehive export --format hf`")
    info = json.loads(info_path.read_text())
    manager = task_manager(options)
    dtype = (info.get("spec", {}).get("task") or {}).get("dtype", "float32") if info.get("format") == "hf" else None
    if dtype is None:
        raise ValueError(f"{str(directory)!r} holds a {info.get('format')} export; lm-eval reads --format hf ones")
    model, tokenizer = load_causal_lm(directory, dtype), load_tokenizer(directory)
    results = evaluate_model(model, tokenizer, options, load_tasks(options, manager))
    job, run_id, metrics = _export_job(store, info), None, {}
    if job is not None:
        run_id = job.mlflow_run_id
        metrics = mlflow_metrics(results, metric_prefix(job, int(info["candidate_id"])))
        log_scores(parse_spec(job.spec), run_id, metrics)
    return _report(info.get("job_id"), info.get("candidate_id"), options, results, run_id, metrics)


def _export_job(store: JobStore | None, info: dict[str, Any]) -> JobRecord | None:
    """The exporting job, where this job store still has it (an export may travel to another machine)."""
    if store is None or not info.get("job_id"):
        return None
    try:
        return store.get_job(str(info["job_id"]))
    except (KeyError, ValueError):
        return None


def _report(
    job_id: str | None,
    candidate: int | str | None,
    options: LMEvalOptions,
    results: dict[str, dict[str, float]],
    run_id: str | None,
    metrics: dict[str, float],
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "candidate": candidate,
        "tasks": list(options.tasks),
        "limit": options.limit,
        "lm_eval": results,
        "mlflow_run_id": run_id,
        "mlflow_metrics": sorted(metrics),
    }


def final_options(spec: JobSpec) -> LMEvalOptions | None:
    section = spec.evaluation.lm_eval if spec.evaluation is not None else None
    if section is None:
        return None
    return LMEvalOptions.parse(section.tasks, section.include_path, section.limit)


def check_final_evaluation(spec: JobSpec) -> None:
    """Before a search starts: its ``evaluation.lm_eval`` names known tasks and its task is a causal LM."""
    options = final_options(spec)
    if options is not None:
        causal_task(spec)
        try:
            task_manager(options)
        except ValueError as exc:
            raise ValueError(f"evaluation.lm_eval.tasks: {str(exc).removeprefix('--lm-eval: ')}") from None


def final_evaluation(run: SearchRun, parent: str, best_id: int) -> dict[str, Any]:
    """A search's ``evaluation.lm_eval``: ``{"best": {task: {metric: value}}, "dense": {...}}``, also logged
    to the parent run. The job has its result already, so a failure here is reported, not raised."""
    spec = run.spec
    options = final_options(spec)
    if options is None:
        return {}
    if run.show_progress:
        print(f"lm-eval {', '.join(options.tasks)}: the best candidate, then the dense model", file=sys.stderr)
    try:
        manager = task_manager(options)
        causal_task(spec)  # a module:factory task is known to be a causal LM only now
        chosen: Chosen = trial_candidate(run.job, spec, run.store.trials(run.job_id), best_id)
        model, task = rebuilt(spec, chosen)
        tokenizer = tokenizer_of(task)
        best = evaluate_model(model, tokenizer, options, load_tasks(options, manager))
        del model
        dense = evaluate_model(task.load_model().eval(), tokenizer, options, load_tasks(options, manager))
    except Exception as exc:  # the search's own results stand; say why the evaluation has none
        return {"error": f"{type(exc).__name__}: {exc}"}
    run.tracker.log_metrics(parent, mlflow_metrics(best) | mlflow_metrics(dense, "dense."))
    return {"best": best, "dense": dense}
