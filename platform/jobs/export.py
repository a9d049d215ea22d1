"""``prunehive export``: a finished job's candidate, as files a user loads without prunehive.

The candidate comes from the job store exactly as the job evaluated it: its per-layer sparsities (and,
for a metric search, its expression) from its trial row. The model is rebuilt in this process the way a
worker built it (the spec's task, metric, granularity, calibration and seed), the candidate's masks are
computed by the same engine and the pruned weights are set to zero in place (no ``torch.nn.utils.prune``
reparametrisation, so any loader reads the result). Evaluating the written model on the task's
validation split therefore gives the trial's recorded quality.

``prunehive.json`` and ``--json`` carry the candidate's test scores too (``test_metrics``): as the job's
summary reports them where it lists the candidate (its best, Pareto front or leaderboard), else scored
here on the test split of the rebuilt model (trials are scored on validation only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prunehive.platform.jobs.export_formats import FORMATS, write_hf, write_recipe, write_torch
from prunehive.platform.spec.job import JobSpec, parse_spec
from prunehive.platform.store.jobs import JobRecord, JobStore, TrialRecord
from prunehive.workers.metrics import EXPRESSION_PREFIX
from prunehive.workers.tasks.spec import HFTaskSpec

SEARCH_KINDS = ("search", "metric-search")


@dataclass(frozen=True)
class Chosen:
    """The candidate to export, as the job recorded it."""

    candidate_id: int
    sparsity: dict[str, float]  # requested, per layer, in the workers' layer order
    metric: str  # the importance metric its weights were ranked by
    result: dict[str, Any]  # the trial's recorded result (metrics, achieved sparsity, per-layer)


def _candidate_id(job: JobRecord, which: str) -> int:
    if which == "best":
        best = (job.summary or {}).get("best")
        if not isinstance(best, dict) or "candidate_id" not in best:
            raise ValueError(f"job {job.id} has no best candidate ({job.status}); name a trial with --candidate ID")
        return int(best["candidate_id"])
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
    trial = next((t for t in trials if t.candidate_id == cid), None)
    if trial is None:
        raise ValueError(f"job {job.id} has no trial with candidate id {cid}")
    if trial.state != "complete" or trial.result is None:
        raise ValueError(f"candidate {cid} of job {job.id} did not complete: {trial.error}")
    names = list(trial.result["layers"])  # the workers' layer order, as the trial recorded it
    vector = [float(v) for v in trial.params["sparsity"]]
    if len(vector) != len(names):
        raise ValueError(f"candidate {cid} of job {job.id} has {len(vector)} sparsities for {len(names)} layers")
    expression = trial.params.get("expression")
    metric = f"{EXPRESSION_PREFIX}{expression}" if expression else spec.pruning.metric
    return Chosen(cid, dict(zip(names, vector, strict=True)), metric, dict(trial.result))


def _empty_dir(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {str(out)!r} is not an empty directory")
    return out


def recorded_test(job: JobRecord, candidate_id: int) -> dict[str, float] | None:
    """The candidate's test scores as the job's summary reports them, or None where it does not list it."""
    summary = job.summary or {}
    listed = [summary.get("best"), *summary.get("pareto_front", []), *summary.get("leaderboard", [])]
    for entry in listed:
        if isinstance(entry, dict) and entry.get("candidate_id") == candidate_id:
            test = (entry.get("metrics") or {}).get("test")
            if test:
                return {str(k): float(v) for k, v in test.items()}
    return None


def scored_test(task: Any, model: Any) -> dict[str, float]:
    """The test split's scores of an exported model, by the task's own evaluation (as a worker scores)."""
    from prunehive.workers.kl import score_splits

    return score_splits(task, model, ("test",))["test"].to_dict()


def rebuilt(spec: JobSpec, chosen: Chosen) -> tuple[Any, Any]:
    """The task's model with the candidate's pruned weights zeroed in place, or, for a job whose workers
    read candidates from a solver's level database (``solver: sparsegpt``), with that database's weights;
    where the job fine-tuned its candidates, fine-tuned the same way with the masks held. The task comes
    with it, to score the model."""
    import torch

    from prunehive.workers.engine import PruningEngine
    from prunehive.workers.tasks import load_task
    from prunehive.workers.tasks.base import seed_everything

    p = spec.pruning
    seed_everything(spec.seed)  # as a worker does before building its task
    task = load_task(spec.task, seed=spec.seed)
    engine = PruningEngine(
        task,
        p.metric,
        p.granularity,
        per_row=p.per_row,
        calibration_batches=p.calibration_batches,
        seed=spec.seed,
        with_grads=True if spec.kind == "metric-search" else None,  # as the job's workers were built
    )
    if engine.names != list(chosen.sparsity):
        raise ValueError(f"the task's prunable layers changed since the job ran: {engine.names}")
    engine.use_metric(chosen.metric)
    if p.solver != "mask" and not chosen.metric.startswith(EXPRESSION_PREFIX):  # as the workers chose
        model = _solved(engine, p.solver, p.levels, p.calibration_batches, chosen.sparsity)
        modules = dict(model.named_modules())
        masks = {n: modules[n].weight != 0 for n in chosen.sparsity}  # the solver's updated weights, held
    else:
        masks = engine.masks(chosen.sparsity)  # all masks first: zeroing weights must not change the ranking
        model = engine.model
        modules = dict(model.named_modules())
    channel = p.granularity == "channel"

    def zero() -> None:
        with torch.no_grad():
            for name, mask in masks.items():
                module = modules[name]
                module.weight.mul_(mask)
                if channel and module.bias is not None:  # a removed output channel loses its bias too
                    module.bias.mul_(mask.reshape(mask.shape[0], -1).any(1))

    zero()
    if p.recovery_steps > 0:
        task.train(model, p.recovery_steps, lr=task.lr * 0.1, after_step=zero)
    return model.cpu().eval(), task


def _solved(engine: Any, solver: str, levels: list[float], batches: int, sparsity: dict[str, float]) -> Any:
    """The candidate's weights from the node's level database (a solver that updates the kept weights)."""
    from prunehive.workers.solvers.level_engine import LevelEngine, open_database

    return LevelEngine(engine, open_database(engine, solver, levels, batches)).export(sparsity)


def export_candidate(
    store: JobStore, job_id: str, which: str = "best", out: str | Path = ".", fmt: str | None = None
) -> dict[str, Any]:
    """Write candidate ``which`` of job ``job_id`` to ``out``; returns what ``--json`` prints."""
    job = store.get_job(job_id)
    spec = parse_spec(job.spec)
    hf_task = spec.task if isinstance(spec.task, HFTaskSpec) else None
    fmt = fmt or ("hf" if hf_task else "torch")
    if fmt not in FORMATS:
        raise ValueError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "hf" and hf_task is None:
        raise ValueError(f"--format hf needs an hf: task; job {job.id} prunes {spec.task!r} (use torch or recipe)")
    if fmt == "recipe" and spec.pruning.granularity == "channel":
        raise ValueError("--format recipe: llm-compressor's pruning modifiers take unstructured or N:M sparsity")
    chosen = choose(job, spec, store.trials(job.id), which)
    target = _empty_dir(Path(out).expanduser().resolve())
    test = recorded_test(job, chosen.candidate_id)
    model, task = rebuilt(spec, chosen) if fmt != "recipe" or test is None else (None, None)
    if test is None:
        test = scored_test(task, model)
    info = {
        "job_id": job.id,
        "candidate_id": chosen.candidate_id,
        "format": fmt,
        "metric": chosen.metric,
        "granularity": spec.pruning.granularity,
        "per_row": spec.pruning.per_row,
        "sparsity": chosen.sparsity,
        "achieved_sparsity": chosen.result["achieved_sparsity"],
        "layers": chosen.result["layers"],
        "metrics": chosen.result["metrics"],
        "test_metrics": test,
        "spec": job.spec,
    }
    if fmt == "recipe":
        measured = {name: float(chosen.result["layers"][name]) for name in chosen.sparsity}  # job's layer order
        files = write_recipe(measured, chosen.metric, spec.pruning.granularity, target, info, spec.pruning.solver)
    elif hf_task is not None and fmt == "hf":
        files = write_hf(model, hf_task, target, info)
    else:
        files = write_torch(model, target, info)
    return {
        "job_id": job.id,
        "candidate": chosen.candidate_id,
        "format": fmt,
        "out": str(target),
        "files": files,
        "metric": chosen.metric,
        "granularity": spec.pruning.granularity,
        "achieved_sparsity": chosen.result["achieved_sparsity"],
        "metrics": chosen.result["metrics"],
        "test_metrics": test,
    }
