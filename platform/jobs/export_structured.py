"""``prunehive export`` of a structured search's candidate (granularity ``head``, ``block`` or ``structured``):
the physically smaller model, not the dense shapes with units zeroed.

The candidate's per-sublayer levels (its trial row) become a ``StructurePlan`` on an engine built exactly as
the job's ``StructuredEvalWorker`` built it (seeded task, importance ranking, calibration, solver), so the
kept units and refitted consumers are the ones the trial scored. ``--format hf`` writes a Hugging Face
directory: a plain Llama config when every kept block keeps the same widths, else per-layer widths with
prunehive's modelling file (``trust_remote_code``); ``--format torch`` the smaller model's state dict.
A recipe cannot describe removed heads or blocks and is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from prunehive.platform.jobs.export_formats import _listing, _write_info, write_torch
from prunehive.platform.jobs.export_result import Chosen, Exported
from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.platform.spec.job import JobSpec
from prunehive.platform.store.jobs import JobRecord
from prunehive.workers.build import EngineSpec, seeded_task
from prunehive.workers.contracts import Healed
from prunehive.workers.kl import score_splits
from prunehive.workers.structure.distill import healed_candidate
from prunehive.workers.structure.engine import StructuredEngine
from prunehive.workers.structure.hf_export import write_shrunk
from prunehive.workers.structure.modeling_prunehive_llama import PrunedLlamaConfig
from prunehive.workers.structure.shrink import parameter_count, shrink
from prunehive.workers.tasks.base import Task
from prunehive.workers.tasks.code_lm import CodeLMTask, byte_tokenizer
from prunehive.workers.tasks.hf_lm import HFCausalLMTask

STRUCTURED_FORMATS = ("hf", "torch")


def check_structured_format(fmt: str, granularity: str) -> None:
    """Only the smaller model's formats: llm-compressor's recipes prune weights, not heads or blocks."""
    if fmt not in STRUCTURED_FORMATS:
        raise ValueError(
            f"--format {fmt}: a {granularity} candidate removes heads, channels or blocks, which a recipe cannot "
            "describe; use hf or torch"
        )


def structured_engine(spec: JobSpec) -> StructuredEngine:
    """The engine the job's ``StructuredEvalWorker`` built (same seed, task, ranking and solver)."""
    p = spec.pruning
    task = seeded_task(EngineSpec(spec.task, p.metric, p.granularity, p.per_row, p.calibration_batches, spec.seed))
    return StructuredEngine(task, p.metric, p.granularity, p.calibration_batches, p.solver)


def task_tokenizer(task: Task) -> Any | None:
    """The tokenizer a user needs beside the model, where the task has one."""
    if isinstance(task, CodeLMTask):
        return byte_tokenizer()
    if isinstance(task, HFCausalLMTask):
        return task.tokenizer
    return None


def smaller_model(spec: JobSpec, levels: dict[str, float], healed: bool = False) -> tuple[nn.Module, StructuredEngine]:
    """The candidate's physically smaller model, and the engine (with its task) that built it; ``healed``:
    after the job's ``pruning.recovery``, trained as the job's worker trained it (same calibration rows,
    seed and recipe), so it scores what the summary's ``healed`` entry recorded."""
    engine = structured_engine(spec)
    names = [s.name for s in engine.slots]
    if names != list(levels):
        raise ValueError(f"the task's decoder sublayers changed since the job ran: {names}")
    vector = [float(v) for v in levels.values()]
    recovery = spec.pruning.recovery
    if not healed or recovery is None:
        return engine.smaller_model(vector).cpu().eval(), engine
    plan, fit = healed_candidate(engine, vector, recovery.steps, recovery.lr, recovery.distill)
    return shrink(fit.model, plan).cpu().eval(), engine


def healed_record(job: JobRecord, spec: JobSpec, chosen: Chosen) -> Healed:
    """The summary's healed scores of ``chosen``: only a structured search with ``pruning.recovery`` heals,
    and only its best candidate and its baselines."""
    if spec.pruning.recovery is None:
        raise ValueError(f"--healed: job {job.id} ran no pruning.recovery, so nothing was healed")
    entry = SearchSummary.from_dict(job.summary).listed(chosen.candidate_id) if job.summary else None
    if entry is None or entry.healed is None:
        raise ValueError(f"--healed: candidate {chosen.candidate_id} was not healed (the best candidate was)")
    return entry.healed


def export_structured(
    job: JobRecord,
    spec: JobSpec,
    chosen: Chosen,
    fmt: str,
    target: Path,
    test: dict[str, float] | None,
    healed: bool = False,
) -> dict[str, Any]:
    """Write ``chosen`` as the smaller model under ``target`` (``healed``: after the job's recovery); returns
    what ``--json`` prints."""
    check_structured_format(fmt, spec.pruning.granularity)
    record = healed_record(job, spec, chosen) if healed else None
    small, engine = smaller_model(spec, chosen.sparsity, healed)
    config: Any = small.config
    recorded = chosen.result
    metrics = {split: m.to_dict() for split, m in recorded.metrics.items()}
    if record is not None:  # the healed model's scores, as the summary recorded them
        metrics = {split: m.to_dict() for split, m in record.metrics.items() if split != "test"}
        test = record.metrics["test"].to_dict() if "test" in record.metrics else None
    if test is None:  # not listed in the summary: scored here, as a worker scores (trials score validation only)
        test = score_splits(engine.task, small, ("test",))["test"].to_dict()
    plan = engine.plan_of(list(chosen.sparsity.values()))
    info: dict[str, Any] = {
        "job_id": job.id,
        "candidate_id": chosen.candidate_id,
        "format": fmt,
        "metric": chosen.metric,
        "granularity": spec.pruning.granularity,
        "solver": spec.pruning.solver,
        "sparsity": chosen.sparsity,
        "achieved_sparsity": recorded.achieved_sparsity,
        "layers": dict(recorded.layers),
        "plan": plan.to_dict(),
        "metrics": metrics,
        "test_metrics": test,
        "healed": record is not None,
        "spec": job.spec,
    }
    if fmt == "hf":
        if hasattr(config, "use_cache"):  # the task switched the KV cache off for scoring; generation wants it
            config.use_cache = True
        written = write_shrunk(small, target, task_tokenizer(engine.task))
        shape = {"form": written.form, "trust_remote_code": written.trust_remote_code, "parameters": written.parameters}
        _write_info(target, {**info, **shape})
        files = _listing(target)
    else:  # the smaller model's state dict; prunehive.json holds its config and which units it keeps
        per_layer = isinstance(config, PrunedLlamaConfig)
        form = "per-layer" if per_layer else "plain"
        shape = {"form": form, "trust_remote_code": per_layer, "parameters": parameter_count(small)}
        files = write_torch(small, target, {**info, **shape, "config": config.to_dict()})
    shape = {"healed": record is not None, **shape}
    return Exported(job.id, chosen, fmt, target, files, spec.pruning.granularity, metrics, test, shape).to_dict()
