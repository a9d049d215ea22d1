"""Federated plans side by side: dense FedAvg, fixed, progressive and the named algorithms, on Flower.

Every cell is a real Flower simulation (``workers.federated.simulation.simulate``): non-IID Dirichlet
partitions, several seeds, each plan at each sparsity. Printed per (partition, plan, sparsity):
final global test accuracy (mean ± std over seeds), uplink and downlink bytes (all clients, all
rounds), client training FLOPs (all clients, all rounds, sparse-aware, see ``client_cost``) and the
largest client's peak training memory; at the highest sparsity, whether each named plan beats
``fixed`` in accuracy or in cost at equal accuracy.

Results are appended to ``--out`` (JSON lines) as each simulation ends, and runs already there are
skipped, so an interrupted table resumes.

    .venv/bin/python scripts/federated_table.py            # the full table (10 clients, 3 seeds)
    .venv/bin/python scripts/federated_table.py --quick    # 1 seed, Dirichlet 0.5, 95%, short runs
    .venv/bin/python scripts/federated_table.py --report   # the table of the runs --out holds so far
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from prunehive.workers.federated.plans import NAMED_PLANS
from prunehive.workers.federated.simulation import SimulationSettings, simulate

BASE_PLANS = ("dense", "fixed", "progressive")
EQUAL = 0.01  # accuracies closer than this (or than the seeds' spread) count as equal
CHEAPER = 0.95  # a cost at most this fraction of fixed's counts as lower
COSTS = ("bytes_up", "bytes_down", "client_flops", "peak_client_bytes")
SPENT = ("bytes_up", "bytes_down", "client_flops")  # the costs that add up round by round (a row's ``curve``)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits-cnn-bn")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.1], help="Dirichlet concentrations")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.8, 0.95])
    p.add_argument("--plans", nargs="+", default=[*BASE_PLANS, *NAMED_PLANS])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--local-epochs", type=int, default=5)  # a client holds ~110 rows: 4 batches an epoch
    p.add_argument("--out", type=Path, default=Path("federated_table.jsonl"))
    p.add_argument("--quick", action="store_true", help="1 seed, Dirichlet 0.5, 95%% only, 8 rounds of 5 epochs")
    p.add_argument("--report", action="store_true", help="print the table of the runs --out holds; run nothing")
    args = p.parse_args(argv)
    if args.quick:
        args.alphas, args.seeds, args.sparsities, args.rounds, args.local_epochs = [0.5], [0], [0.95], 8, 5
    return args


def cells(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for alpha in args.alphas:
        for plan in args.plans:
            for sparsity in [0.0] if plan == "dense" else args.sparsities:
                for seed in args.seeds:
                    out.append({"alpha": alpha, "plan": plan, "sparsity": sparsity, "seed": seed})
    return out


def key(cell: dict[str, Any], args: argparse.Namespace) -> str:
    return json.dumps({**cell, "task": args.task, "clients": args.clients, "rounds": args.rounds,
                       "local_epochs": args.local_epochs}, sort_keys=True)  # fmt: skip


def run_cell(cell: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    settings = SimulationSettings(
        task=args.task,
        plan=cell["plan"],
        targets=[cell["sparsity"]],
        clients=args.clients,
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        partition_kind="dirichlet",
        partition_value=cell["alpha"],
        seed=cell["seed"],
    )
    started = time.perf_counter()
    result = simulate(settings, lambda record: None)
    totals = result.totals()
    curve, spent = [], dict.fromkeys(SPENT, 0.0)
    for record in result.history:  # per round: test accuracy and the costs spent so far
        spent = {k: spent[k] + float(getattr(record, k)) for k in SPENT}
        curve.append([record.test_accuracy[-1], *(spent[k] for k in SPENT)])
    return {
        "accuracy": result.history[-1].test_accuracy[-1],
        "sparsity": result.tier_sparsity[-1],
        "seconds": time.perf_counter() - started,
        **{k: totals[k] for k in (*COSTS, "failures")},
        "curve": curve,
    }


def load(path: Path) -> dict[str, dict[str, Any]]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["key"]: row["result"] for row in rows}


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    accs = [r["accuracy"] for r in rows]
    out = {"acc": statistics.mean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "n": len(rows)}
    out.update({k: statistics.mean(r[k] for r in rows) for k in COSTS})
    return out


def spent_to_reach(row: dict[str, Any], accuracy: float) -> dict[str, float]:
    """The costs a run had spent when its test accuracy first reached ``accuracy`` (from its ``curve``)."""
    for acc, *spent in row["curve"]:
        if acc >= accuracy - 1e-12:
            return dict(zip(SPENT, spent, strict=True))
    raise ValueError(f"the run never reached {accuracy}")


def cost_at_equal_accuracy(
    plan: dict[int, dict[str, Any]], fixed: dict[int, dict[str, Any]], seeds: list[int]
) -> tuple[bool, str]:
    """Per seed, each run's costs until it first reached the lower of the two final accuracies (the accuracy both
    reached); a plan is cheaper where it spent at most ``CHEAPER`` of fixed's on every seed. Whether any cost is
    lower, and what the table says of it."""
    pairs = []
    for s in seeds:
        level = min(plan[s]["accuracy"], fixed[s]["accuracy"])
        pairs.append((spent_to_reach(plan[s], level), spent_to_reach(fixed[s], level)))
    cheaper = [k for k in SPENT if all(p[k] <= CHEAPER * f[k] for p, f in pairs)]
    if not cheaper:
        return False, "no lower cost to reach the accuracy both reach"
    mb = [f"{k.replace('_', ' ')} {statistics.mean(p[k] for p, _ in pairs) / 1e6:.2f} vs "
          f"{statistics.mean(f[k] for _, f in pairs) / 1e6:.2f} M" for k in cheaper]  # fmt: skip
    return True, "lower cost to reach the accuracy both reach: " + ", ".join(mb)


def verdict(plan: dict[int, dict[str, Any]], fixed: dict[int, dict[str, Any]]) -> str:
    """Whether ``plan`` beats ``fixed`` (each: results by seed): in accuracy, or in cost at equal accuracy.
    Seeds pair the runs (the same partition and initial model), so accuracy is compared seed by seed: higher
    on every seed by more than ``EQUAL``, or on average by more than the paired differences' spread. Where both
    runs of every seed kept their per-round curve, equal accuracy is the accuracy both reached, and the costs are
    what each spent to reach it; rows without curves compare final accuracies within the seeds' spread."""
    seeds = sorted(set(plan) & set(fixed))
    diffs = [plan[s]["accuracy"] - fixed[s]["accuracy"] for s in seeds]
    diff = statistics.mean(diffs)
    tie = max(EQUAL, statistics.stdev(diffs) if len(diffs) > 1 else 0.0)
    p, f = summarise([plan[s] for s in seeds]), summarise([fixed[s] for s in seeds])
    cheaper = [k for k in COSTS if p[k] <= CHEAPER * f[k]]
    every_seed = all(d > EQUAL for d in diffs)
    if every_seed or diff > tie:
        return f"yes: accuracy {diff * 100:+.1f} pt" + (" (every seed)" if every_seed else "")
    if all("curve" in plan[s] and "curve" in fixed[s] for s in seeds):
        lower, reached = cost_at_equal_accuracy(plan, fixed, seeds)
        return f"{'yes' if lower else 'no'}: accuracy {diff * 100:+.1f} pt; {reached}"
    if abs(diff) <= tie and cheaper:
        spread = f"{diff * 100:+.1f} ± {tie * 100:.1f} pt"
        return f"yes: equal accuracy ({spread}), lower " + ", ".join(k.replace("_", " ") for k in cheaper)
    if cheaper:
        return f"no: {diff * 100:+.1f} pt accuracy (lower " + ", ".join(k.replace("_", " ") for k in cheaper) + ")"
    return f"no: {diff * 100:+.1f} pt accuracy, no lower cost"


def table(args: argparse.Namespace, done: dict[str, dict[str, Any]]) -> str:
    top = max(args.sparsities)
    lines = [
        "| partition | plan | sparsity | test accuracy | uplink MB | downlink MB | client GFLOPs | peak client MB "
        f"| vs fixed at {top:.0%} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for alpha in args.alphas:
        groups: dict[tuple[str, float], dict[int, dict[str, Any]]] = {}
        for cell in cells(args):
            if cell["alpha"] == alpha and key(cell, args) in done:
                groups.setdefault((cell["plan"], cell["sparsity"]), {})[cell["seed"]] = done[key(cell, args)]
        fixed = groups.get(("fixed", top))
        for (plan, sparsity), by_seed in groups.items():
            s = summarise(list(by_seed.values()))
            versus = verdict(by_seed, fixed) if fixed and plan in NAMED_PLANS and sparsity == top else ""
            lines.append(
                f"| dirichlet {alpha:g} | {plan} | {sparsity:.0%} | {s['acc']:.3f} ± {s['std']:.3f} (n={s['n']:.0f}) "
                f"| {s['bytes_up'] / 1e6:.2f} | {s['bytes_down'] / 1e6:.2f} | {s['client_flops'] / 1e9:.1f} "
                f"| {s['peak_client_bytes'] / 1e6:.2f} | {versus} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    done = load(args.out)
    todo = [] if args.report else [c for c in cells(args) if key(c, args) not in done]
    for i, cell in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {cell}", file=sys.stderr, flush=True)
        try:
            result = run_cell(cell, args)
        except Exception as exc:  # one broken cell must not cost the others; it is retried on the next run
            print(f"    failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            continue
        done[key(cell, args)] = result
        with args.out.open("a") as f:
            f.write(json.dumps({"key": key(cell, args), "result": result}) + "\n")
        print(f"    accuracy {result['accuracy']:.3f} in {result['seconds']:.0f} s", file=sys.stderr, flush=True)
    print(f"{args.task}, {args.clients} clients, {args.rounds} rounds of {args.local_epochs} local epochs")
    print(table(args, done))


if __name__ == "__main__":
    main()
