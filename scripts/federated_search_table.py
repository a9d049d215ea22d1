"""Federated search against its upper bound and the heuristics, over seeds: the same search (evolution,
Wanda masks) scored centrally on all clients' data pooled, and scored on Flower clients
(``search.evaluation: federated``, non-IID Dirichlet clients, a sample of them per candidate); uniform and
ERK as the federated search's own baselines, scored the same federated way.

Run: .venv/bin/python scripts/federated_search_table.py [--quick] [--task digits-mlp] [--budget 80]
     [--seeds 0 1 2] [--sparsity 0.9] [--clients 10] [--alpha 0.5] [--eval-fraction 0.5]
     [--recovery-rounds 0] [--fitness quality|loss] [--fidelity 90 180 359 --survivors 6 3 1]
     [--out docs/results/federated_search.json]
Every job is a real `prunehive run` in this process's PRUNEHIVE_HOME; each finished seed is saved to --out,
and a rerun with the same settings goes on from the seeds it holds. Test accuracy is every client's
share of the test split together (the final re-evaluation asks all clients), i.e. the whole test split.
Goals: the federated search beats uniform and ERK on every seed, and its test-accuracy gain over uniform
is at least 90% of the central search's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from table_jobs import mean_std, run_job

from prunehive.workers.contracts import Failed, entry_from_dict

GOAL_RATIO = 0.9


def test_accuracy(data: dict[str, Any], name: str) -> float:
    entry = entry_from_dict(data)
    if isinstance(entry, Failed):
        raise SystemExit(f"{name} failed: {entry.error}")
    return entry.quality("test")


def specs(args: argparse.Namespace, seed: int) -> dict[str, dict[str, Any]]:
    """The central search and the federated one, identical but for where candidates are scored."""
    search = {
        "strategy": "evolution",
        "budget": args.budget,
        "seed": seed,
        "baselines": ["uniform", "erk"],
        "fitness": args.fitness,
        "options": {"population": args.population},
    }
    if args.fidelity:  # multi-step selection: validation samples per stage (federated: clients, in proportion)
        search.update(fidelity=args.fidelity, survivors=args.survivors)
    central = {
        "kind": "search",
        "task": args.task,
        "pruning": {"sparsity": args.sparsity, "metric": "wanda"},
        "search": search,
        "resources": {"workers": 1, "batch": 4},
    }
    federated = {
        **central,
        "search": {**search, "evaluation": "federated"},
        "federated": {
            "clients": args.clients,
            "partition": {"dirichlet": args.alpha},
            "seed": seed,
            "eval_fraction": args.eval_fraction,
            "recovery_rounds": args.recovery_rounds,
        },
    }
    return {"central": central, "federated": federated}


def measure(args: argparse.Namespace, work: Path, done: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per seed; seeds in ``done`` (measured earlier with the same settings) are not run again."""
    rows = []
    for seed in args.seeds:
        if seed in done:
            rows.append(done[seed])
            continue
        row: dict[str, Any] = {"seed": seed}
        for label, spec in specs(args, seed).items():
            summary, wall = run_job(spec, work)
            row[label] = {
                "best": test_accuracy(summary["best"], f"{label} best"),
                **{b: test_accuracy(e, f"{label} {b}") for b, e in summary["baselines"].items()},
                "trials": summary["trials"],
                "wall_seconds": round(wall, 1),
            }
            print(f"seed {seed} {label}: {row[label]}", file=sys.stderr, flush=True)
        central, federated = row["central"], row["federated"]
        central_gain = central["best"] - central["uniform"]
        row["gain_ratio"] = (federated["best"] - federated["uniform"]) / central_gain if central_gain > 0 else None
        row["beats_heuristics"] = federated["best"] > max(federated["uniform"], federated["erk"])
        rows.append(row)
        if not args.quick:
            save(args, rows)
    return rows


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("seeds", "out", "quick")}


def save(args: argparse.Namespace, rows: list[dict[str, Any]], text: str | None = None) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"settings": settings_of(args), "seeds": args.seeds, "rows": rows, "table": text}
    out.write_text(json.dumps(data, indent=2) + "\n")


def measured_before(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """Rows ``--out`` already holds for these settings (a run cut short goes on where it stopped)."""
    out = Path(args.out)
    if args.quick or not out.exists():
        return {}
    data = json.loads(out.read_text())
    return {int(r["seed"]): r for r in data["rows"]} if data.get("settings") == settings_of(args) else {}


def table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    def column(label: str, key: str) -> list[float]:
        return [float(r[label][key]) for r in rows]

    lines = [
        f"{args.task}, {args.sparsity:.0%} sparsity (Wanda masks), evolution, budget {args.budget}; "
        f"{args.clients} clients, Dirichlet {args.alpha}, eval_fraction {args.eval_fraction}, "
        f"recovery_rounds {args.recovery_rounds}; fitness {args.fitness}; "
        + (f"fidelity {args.fidelity}, survivors {args.survivors}; " if args.fidelity else "")
        + f"seeds {' '.join(map(str, args.seeds))}. Test accuracy, mean ± std.",
        "",
        "| entry | scored on | test accuracy | per seed |",
        "| --- | --- | --- | --- |",
    ]
    entries = [
        ("search (upper bound)", "central", "best", "all clients' data pooled"),
        ("search", "federated", "best", "clients (federated)"),
        ("uniform", "federated", "uniform", "clients (federated)"),
        ("ERK", "federated", "erk", "clients (federated)"),
        ("uniform", "central", "uniform", "all clients' data pooled"),
        ("ERK", "central", "erk", "all clients' data pooled"),
    ]
    for name, label, key, where in entries:
        values = column(label, key)
        lines.append(f"| {name} | {where} | {mean_std(values)} | {' '.join(f'{v:.4f}' for v in values)} |")
    ratios = [r["gain_ratio"] for r in rows if r["gain_ratio"] is not None]
    beats = sum(bool(r["beats_heuristics"]) for r in rows)
    mean_ratio = statistics.mean(ratios) if ratios else float("nan")
    lines += [
        "",
        f"Federated search beats uniform and ERK (federated) on {beats} of {len(rows)} seeds "
        f"(goal: all). Its gain over uniform is {mean_ratio:.1%} of the central search's on average "
        f"(per seed: {', '.join(f'{x:.1%}' for x in ratios)}; goal: >= {GOAL_RATIO:.0%}).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one seed, a small budget: a smoke run of the table")
    ap.add_argument("--task", default="digits-mlp", choices=["digits-mlp", "digits-cnn"])
    ap.add_argument("--budget", type=int, default=80)
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--fitness", choices=["quality", "loss"], default="quality", help="what the searches maximise")
    ap.add_argument("--eval-fraction", type=float, default=0.5)
    ap.add_argument("--recovery-rounds", type=int, default=0)
    ap.add_argument("--fidelity", type=int, nargs="+", help="stages' validation samples (the last: all clients)")
    ap.add_argument("--survivors", type=int, nargs="+", help="candidates kept after each stage")
    ap.add_argument("--out", default="docs/results/federated_search.json")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.budget, args.population = args.seeds[:1], 16, 6
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args, Path(tmp), measured_before(args))
    text = table(args, rows)
    print(text)
    if not args.quick:
        save(args, rows, text)


if __name__ == "__main__":
    main()
