"""How well the structured latency table predicts whole models it was not calibrated on, scaled and unscaled.

Builds a structured search worker for ``--task`` (timed at ``--batch``), times its lookup table ``--tables``
times (each calibrated on its own probes, ``workers/structure/timing.py``) and, for each, times ``--held-out``
other whole models (random levels, another seed) against the table's prediction with and without the scale.

Run (on a quiet machine: any other work changes the timings):
    .venv/bin/python scripts/structured_latency_calibration.py --batch 16
    .venv/bin/python scripts/structured_latency_calibration.py --batch 1
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np

from prunehive.workers.contracts import LatencyRequest
from prunehive.workers.structure.timing import saving
from prunehive.workers.structure.worker import StructuredEvalWorker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="code-lm-deep")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--tables", type=int, default=3)
    ap.add_argument("--held-out", type=int, default=4)
    args = ap.parse_args()
    request = LatencyRequest(batch=args.batch, repeats=args.repeats, warmup=3)
    worker = StructuredEvalWorker(args.task, granularity="structured", solver="sparsegpt", threads=2, latency=request)
    timer = worker.timer
    assert timer is not None
    print(f"{args.task}, batch {args.batch}: median (max) relative error of the predicted fraction of dense")
    for k in range(args.tables):
        scaled = timer.table()
        scale = scaled.probe_scale or 1.0
        raw = replace(scaled, deltas=[[v / scale for v in d] for d in scaled.deltas])
        models = timer.probes(args.held_out, seed=1000 + k)  # not the calibration's seed
        errors = {
            name: [abs(1.0 - saving(table, i) - m) / m for i, m in models]
            for name, table in (("raw", raw), ("scaled", scaled))
        }
        print(
            f"table {k}: dense {scaled.dense_ms:.2f} ms, scale {scale:.3f}; held-out models "
            f"{' '.join(f'{m:.3f}' for _, m in models)}: unscaled {np.median(errors['raw']):.1%} "
            f"({max(errors['raw']):.1%}), scaled {np.median(errors['scaled']):.1%} ({max(errors['scaled']):.1%})",
            flush=True,
        )


if __name__ == "__main__":
    main()
