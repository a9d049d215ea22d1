"""The exported model of a finished structured search, loaded as a user loads it and timed against dense.

For each job: ``prunehive export JOB --format hf`` of its best candidate, ``AutoModelForCausalLM.from_pretrained``
(with ``trust_remote_code`` only for the per-layer form), the reloaded model's validation quality against the
one the trial recorded, and its CPU latency against the dense model, at the job's own latency settings
(batch, repeats, warmup; the fastest of interleaved passes, as the job's workers time candidates), against the
speed-up the job reported for that candidate. Both are timed without a KV cache, as the job times them.

    PRUNEHIVE_HOME=... .venv/bin/python scripts/structured_export_check.py JOB [JOB ...] [--repeats 30]

Goals (structured compression): ``from_pretrained`` loads it, reloading reproduces the trial's validation quality
within 1e-4, and its measured latency is within 10% of what the job reported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from prunehive.platform.jobs.export import export_candidate
from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.platform.settings import default_database_url
from prunehive.platform.spec.job import parse_spec
from prunehive.platform.store.jobs import JobStore
from prunehive.workers.latency import batch_of
from prunehive.workers.structure.timing import fastest_ms
from prunehive.workers.tasks import load_task


def check(store: JobStore, job_id: str, repeats: int | None, work: Path) -> dict[str, Any]:
    job = store.get_job(job_id)
    spec = parse_spec(job.spec)
    summary = SearchSummary.from_dict(job.summary or {})
    latency = spec.search.latency
    batch, warmup = (latency.batch, latency.warmup) if latency else (1, 3)
    repeats = repeats or (latency.repeats if latency else 30)
    out = work / job.id
    info = export_candidate(store, job.id, "best", out, "hf")
    small = AutoModelForCausalLM.from_pretrained(
        out, trust_remote_code=bool(info["trust_remote_code"]), local_files_only=True
    ).eval()
    # The export keeps the source's KV cache setting (on) for generation; the job times one forward pass without
    # it, as the task's dense model runs. A cache adds a fixed cost per pass that, on a model this small, is half
    # of dense batch-1 latency, so timing with it measures the cache, not the smaller model.
    small.config.use_cache = False
    task = load_task(spec.task, seed=spec.seed)
    dense = task.model()
    inputs = batch_of(task.example_input(), batch)
    torch.set_num_threads(max(1, int(spec.resources.cpus_per_worker)))  # as the job's workers ran
    ms, dense_ms = fastest_ms(dense.eval(), small, inputs, repeats, warmup)
    reloaded = task.evaluate(small, "validation").quality
    recorded = summary.best.quality("validation")
    reported = summary.best.speedup
    return {
        "job_id": job.id,
        "latency_budget": spec.pruning.latency_budget,
        "batch": batch,
        "form": info["form"],
        "parameters": info["parameters"],
        "validation_recorded": recorded,
        "validation_reloaded": reloaded,
        "exported_ms": ms,
        "dense_ms": dense_ms,
        "exported_speedup": dense_ms / ms,
        "job_speedup": reported,
        "within_10pct": reported is not None and abs(dense_ms / ms - reported) <= 0.1 * reported,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jobs", nargs="+")
    ap.add_argument("--repeats", type=int, help="timed passes (default: the job's)")
    args = ap.parse_args()
    store = JobStore(default_database_url())
    with tempfile.TemporaryDirectory() as tmp:
        rows = [check(store, job, args.repeats, Path(tmp)) for job in args.jobs]
    print(json.dumps(rows, indent=2))
    print("| budget | batch | form | params | val ppl recorded / reloaded | exported speed-up | job reported |")
    print("| ---: | ---: | --- | ---: | --- | ---: | ---: |")
    for r in rows:
        print(
            f"| {1 / r['latency_budget']:.2f}x | {r['batch']} | {r['form']} | {r['parameters']:,} | "
            f"{r['validation_recorded']:.4f} / {r['validation_reloaded']:.4f} | {r['exported_speedup']:.2f}x | "
            f"{r['job_speedup']:.2f}x |"
        )


if __name__ == "__main__":
    main()
