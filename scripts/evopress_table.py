"""The EvoPress table on code-lm: baselines with the mask (wanda) and sparsegpt solvers, evolution at one
fidelity with quality fitness, and evopress with KL fitness and multi-fidelity, over seeds.

Run: .venv/bin/python scripts/evopress_table.py [--budget 400] [--seeds 0 1 2] [--pruning 70% 2:4]
     [--out docs/results/evopress.json]
Every job is a real `prunehive run` in this process's PRUNEHIVE_HOME; the table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.workers.contracts import Entry

PRUNING = {"70%": {"sparsity": 0.7}, "2:4": {"granularity": "2:4"}}


def run(spec: dict, workdir: Path) -> tuple[SearchSummary, float]:
    """The job's summary (``run --json``) and its wall seconds."""
    path = workdir / f"spec-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(spec))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "prunehive.platform.cli", "run", str(path), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"job failed: {done.stderr.strip().splitlines()[-1]}")
    summary = SearchSummary.from_dict(json.loads(done.stdout))
    if summary.quality.name != "perplexity":
        raise SystemExit(f"expected a task scored by perplexity, got {summary.quality.name}")
    return summary, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="docs/results/evopress.json")
    ap.add_argument("--pruning", nargs="+", default=list(PRUNING), choices=list(PRUNING))
    args = ap.parse_args()
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for label, pruning in ((k, PRUNING[k]) for k in args.pruning):
            base = {"kind": "search", "task": "code-lm", "resources": {"workers": 1, "cpus_per_worker": 2}}
            for solver in ("mask", "sparsegpt"):  # the baselines, each solver
                metric = "wanda" if solver == "mask" else "magnitude"  # magnitude: SparseGPT's own OBS criterion
                spec = {
                    **base,
                    "pruning": {**pruning, "metric": metric, "solver": solver},
                    "search": {"strategy": "random", "budget": 1, "baselines": ["uniform", "owl", "atp"]},
                }
                out, _ = run(spec, work)
                for name, entry in out.baselines.items():
                    if not isinstance(entry, Entry):
                        raise SystemExit(f"baseline {name} failed: {entry.error}")
                    rows[f"{label} | {name} ({'wanda' if solver == 'mask' else 'sparsegpt'})"] = {
                        "test": [entry.quality("test")],
                        "tokens": None,
                        "wall": None,
                    }
            searches = {
                "evolution, quality, one fidelity (sparsegpt)": {"strategy": "evolution", "fitness": "quality"},
                "evopress, kl, [2048, 8192, 32768] / [8, 2, 1] (sparsegpt)": {
                    "strategy": "evopress",
                    "fitness": "kl",
                    "fidelity": [2048, 8192, 32768],
                    "survivors": [8, 2, 1],
                    "options": {"offspring": 16},
                },
            }
            for name, search in searches.items():
                key = f"{label} | {name}"
                rows[key] = {"test": [], "validation": [], "tokens": [], "wall": []}
                for seed in args.seeds:
                    spec = {
                        **base,
                        "pruning": {**pruning, "metric": "magnitude", "solver": "sparsegpt"},
                        "search": {**search, "budget": args.budget, "seed": seed, "baselines": ["uniform"]},
                    }
                    out, wall = run(spec, work)
                    rows[key]["test"].append(out.best.quality("test"))
                    rows[key]["validation"].append(out.best.quality("validation"))
                    rows[key]["tokens"].append(out.evaluation_tokens)
                    rows[key]["wall"].append(wall)
                    print(key, seed, rows[key]["test"][-1], out.evaluation_tokens, file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print("| sparsity | method | test ppl | validation ppl | evaluation tokens | wall s |")
    print("|---|---|---:|---:|---:|---:|")
    for key, r in rows.items():
        test = r["test"]
        spread = f"{statistics.mean(test):.3f} ± {statistics.stdev(test):.3f}" if len(test) > 1 else f"{test[0]:.3f}"
        val = f"{statistics.mean(r['validation']):.3f}" if r.get("validation") else "–"
        tokens = f"{statistics.mean(r['tokens']):,.0f}" if r["tokens"] else "–"
        wall = f"{statistics.mean(r['wall']):.0f}" if r["wall"] else "–"
        print(f"| {key} | {spread} | {val} | {tokens} | {wall} |")


if __name__ == "__main__":
    main()
