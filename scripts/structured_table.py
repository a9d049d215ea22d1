"""The structured compression table on code-lm-deep: at measured CPU speed-ups of 1.5x and 2x over dense
(``pruning.latency_budget`` 1/1.5 and 1/2, timed at batch 1 and at batch 16), test perplexity one-shot and
after KL distillation for uniform width, ShortGPT depth, both combined, and structured evopress without and
with training-aware selection (``search.train_steps``), with each one's measured speed-up and parameters.

Run: .venv/bin/python scripts/structured_table.py [--quick] [--seeds 0 1 2] [--speedups 1.5 2]
     [--batches 1 16] [--budget 100] [--offspring 8] [--train-steps 4] [--heal-steps 20] [--margin 0.05]
     [--out docs/results/structured.json]
Every job is a real `prunehive run` in this process's PRUNEHIVE_HOME. The two evopress jobs of a setting
differ only in ``search.train_steps`` (the same stages, offspring, seed and warm start from the heuristics);
the heuristics' rows come from the first of them, healed with the same recipe as the best candidate (the
second heals its best only: its heuristics are the first's).
A rerun with the same settings goes on from the rows ``--out`` holds.

Goals (issue: structured compression): one-shot, evopress closes at least 30% of the best heuristic's
test-perplexity gap to dense at each budget, and after distillation still beats that heuristic.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from table_jobs import Rows, mean_std, run_job

from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.workers.contracts import Entry

HEURISTICS = ("uniform", "shortgpt", "combined")
NAMES = {
    "uniform": "uniform width",
    "shortgpt": "ShortGPT depth",
    "combined": "combined",
    "evopress": "evopress",
    "evopress_train": "evopress, training-aware",
}
GOAL_GAP = 0.3


def spec(args: argparse.Namespace, speedup: float, batch: int, seed: int, train: bool) -> dict[str, Any]:
    search: dict[str, Any] = {
        "strategy": "evopress",
        "budget": args.budget,
        "seed": seed,
        "latency": {"batch": batch, "repeats": args.repeats},
        "options": {"offspring": args.offspring},
        "fidelity": args.fidelity,
        "survivors": args.survivors,
        "baselines": list(HEURISTICS),  # both jobs warm-start from them; the table reads the first job's
    }
    if train:
        search["train_steps"] = [0] * (len(args.fidelity) - 1) + [args.train_steps]
    return {
        "kind": "search",
        "task": args.task,
        "pruning": {
            "sparsity": 0.0,
            "granularity": "structured",
            "solver": "sparsegpt",
            "latency_budget": round(1.0 / speedup, 4),
            "latency_margin": args.margin,
            "recovery": {"steps": args.heal_steps, "distill": "kl", "baselines": not train},
        },
        "search": search,
        "resources": {"workers": 1, "cpus_per_worker": 2},
    }


def scores(entry: Any, name: str) -> dict[str, Any]:
    if not isinstance(entry, Entry):
        raise SystemExit(f"{name} failed: {getattr(entry, 'error', entry)}")
    healed = entry.healed.metrics["test"].quality if entry.healed is not None else None
    return {
        "one_shot": entry.quality("test"),
        "healed": healed,
        "speedup": entry.speedup,
        "params": entry.params,
        "validation": entry.quality("validation"),
    }


def measure(args: argparse.Namespace, rows: Rows, work: Path) -> None:
    """Seed by seed, every setting (a run cut short still covers every budget)."""
    for seed in args.seeds:
        for speedup in args.speedups:
            for batch in args.batches:
                if rows.find(speedup=speedup, batch=batch, seed=seed) is not None:
                    continue
                plain, wall = run_job(spec(args, speedup, batch, seed, False), work)
                trained, wall_trained = run_job(spec(args, speedup, batch, seed, True), work)
                first, second = SearchSummary.from_dict(plain), SearchSummary.from_dict(trained)
                row: dict[str, Any] = {"speedup": speedup, "batch": batch, "seed": seed}
                row["dense"] = scores(first.dense, "dense")
                row.update({h: scores(first.baselines[h], h) for h in HEURISTICS})
                row["evopress"] = scores(first.best, "evopress")
                row["evopress_train"] = scores(second.best, "evopress, training-aware")
                row["wall_seconds"] = [round(wall, 1), round(wall_trained, 1)]
                print(f"{speedup}x batch {batch} seed {seed}: {row}", file=sys.stderr, flush=True)
                rows.add(row)


def gap_closed(row: dict[str, Any], name: str, key: str = "one_shot") -> tuple[str, float]:
    """The best heuristic (by validation, never test) and the share of its test gap to dense ``name`` closes."""
    best = min(HEURISTICS, key=lambda h: row[h]["validation"])
    dense, heuristic = row["dense"]["one_shot"], row[best][key]
    gap = heuristic - dense
    return best, (heuristic - row[name][key]) / gap if gap > 0 else float("nan")


def table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{args.task}, structured (heads, MLP channels, blocks), sparsegpt reconstruction; evopress budget "
        f"{args.budget}, {args.offspring} offspring, stages {args.fidelity} tokens / survivors {args.survivors}; "
        f"training-aware: {args.train_steps} KL steps in the last stage; healing: {args.heal_steps} KL steps; "
        f"placed {args.margin:g} faster than the budget (pruning.latency_margin); "
        f"seeds {' '.join(map(str, sorted({r['seed'] for r in rows})))}. Test perplexity (lower is better), "
        "mean ± std; speed-up measured "
        "whole against dense at the job's batch.",
        "",
        "| budget | batch | candidate | one-shot | distilled | measured speed-up | params |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for speedup in args.speedups:
        for batch in args.batches:
            group = [r for r in rows if r["speedup"] == speedup and r["batch"] == batch]
            if not group:
                continue
            dense = [r["dense"]["one_shot"] for r in group]
            size = group[0]["dense"]["params"]
            lines.append(f"| {speedup}x | {batch} | dense | {mean_std(dense, 3)} | | 1.00x | {size:,} |")
            for name in [*HEURISTICS, "evopress", "evopress_train"]:
                one = [r[name]["one_shot"] for r in group]
                healed = [r[name]["healed"] for r in group if r[name]["healed"] is not None]
                speed = statistics.mean(r[name]["speedup"] or float("nan") for r in group)
                params = statistics.mean(r[name]["params"] for r in group)
                cell = mean_std(healed, 3) if healed else ""
                label = f"| {speedup}x | {batch} | {NAMES[name]} |"
                lines.append(f"{label} {mean_std(one, 3)} | {cell} | {speed:.2f}x | {params:,.0f} |")
    lines += ["", *verdicts(args, rows)]
    return "\n".join(lines)


def verdicts(args: argparse.Namespace, rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for speedup in args.speedups:
        for batch in args.batches:
            group = [r for r in rows if r["speedup"] == speedup and r["batch"] == batch]
            for name in ("evopress", "evopress_train"):
                closed = [gap_closed(r, name) for r in group]
                healed_wins = sum(r[name]["healed"] < r[gap_closed(r, name)[0]]["healed"] for r in group)
                if not closed:
                    continue
                shares = ", ".join(
                    f"{math.floor(share * 1000) / 10:.1f}% of {h}'s" for h, share in closed
                )  # never rounded up
                met = all(share >= GOAL_GAP for _, share in closed) and healed_wins == len(group)
                out.append(
                    f"- {speedup}x, batch {batch}, {NAMES[name]}: one-shot closes {shares} gap (goal >= "
                    f"{GOAL_GAP:.0%}); distilled beats that heuristic distilled on {healed_wins} of {len(group)} "
                    f"seeds. {'Met.' if met else 'Not met.'}"
                )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed, one budget, batch 1, small: a smoke run")
    ap.add_argument("--report", action="store_true", help="print the table of the rows --out holds; run nothing")
    ap.add_argument("--task", default="code-lm-deep")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--speedups", type=float, nargs="+", default=[1.5, 2.0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--offspring", type=int, default=8)
    ap.add_argument("--fidelity", type=int, nargs="+", default=[4096, 32768])
    ap.add_argument("--survivors", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--heal-steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--margin", type=float, default=0.05, help="pruning.latency_margin")
    ap.add_argument("--out", default="docs/results/structured.json")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.speedups, args.batches, args.budget = args.seeds[:1], args.speedups[:1], [1], 16
        args.heal_steps, args.train_steps, args.repeats = 10, 5, 5
    # what a row's numbers depend on; seeds, budgets and batches key the rows, so runs over parts combine
    keys = ("seeds", "speedups", "batches", "out", "quick", "report")
    settings = {k: v for k, v in vars(args).items() if k not in keys}
    rows = Rows(args.out, settings, keep=not args.quick)
    if not args.report:
        with tempfile.TemporaryDirectory() as tmp:
            measure(args, rows, Path(tmp))
    text = table(args, rows.rows)
    if not args.report:  # a report under other settings reads no rows and must not overwrite them
        rows.save(text)
    print(text)


if __name__ == "__main__":
    main()
