"""The multi-fidelity goal on code-lm: does multi-step selection reach single fidelity's final
validation fitness with at most half the evaluation tokens?

Both arms are the same `evopress` search (KL fitness, sparsegpt level database, 70% unstructured,
16 offspring per generation); one scores every offspring on all of validation, the other uses stages
[2048, 8192, 32768] tokens with survivors [8, 2, 1]. For each seed the single-fidelity arm's final best
KL (on all of validation) is the bar; the multi-fidelity arm's trials, in the order they were run, give
the validation tokens spent until a full-validation trial first reaches that bar. Nothing reads test
to decide anything; test perplexity of each arm's best is printed next to it.

Run: .venv/bin/python scripts/fidelity_ablation.py [--seeds 0 1 2] [--single 160] [--multi 416]
     [--out docs/results/fidelity-ablation.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from prunehive.platform.jobs.summary_types import SearchSummary
from prunehive.workers.contracts import EvalResult

STAGES = {"fidelity": [2048, 8192, 32768], "survivors": [8, 2, 1]}


def cli(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "prunehive.platform.cli", *args, "--json"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"prunehive {args[0]} failed: {done.stderr.strip().splitlines()[-1]}")
    out: dict = json.loads(done.stdout)
    return out


@dataclass(frozen=True)
class Arm:
    """One search of the comparison: its summary, its completed trials' (candidate id, result), wall time."""

    summary: SearchSummary
    trials: list[tuple[int, EvalResult]]
    wall_seconds: float


def run(search: dict, seed: int, budget: int, workdir: Path) -> Arm:
    spec = {
        "kind": "search",
        "task": "code-lm",
        "resources": {"workers": 1, "cpus_per_worker": 2},
        "pruning": {"sparsity": 0.7, "metric": "magnitude", "solver": "sparsegpt"},
        "search": {
            "strategy": "evopress",
            "fitness": "kl",
            "budget": budget,
            "seed": seed,
            "baselines": ["uniform"],
            "options": {"offspring": 16},
            **search,
        },
    }
    path = workdir / f"spec-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(spec))
    started = time.perf_counter()
    summary = SearchSummary.from_dict(cli("run", str(path)))
    wall = time.perf_counter() - started
    rows = cli("show", summary.job_id)["trial_rows"]  # show's rows: candidate_id, state, result, error, worker
    done = [(int(r["candidate_id"]), EvalResult.from_dict(r["result"])) for r in rows if r["state"] == "complete"]
    return Arm(summary, done, wall)


def curve(trials: list[tuple[int, EvalResult]]) -> list[tuple[int, float, float]]:
    """(validation tokens spent so far, KL, perplexity) of the search's best-by-KL candidate so far, at
    every trial scored on all of validation, in run order: the search's own view of its progress."""
    full = max(r.tokens or 0 for _, r in trials)
    spent, best, points = 0, (float("inf"), float("inf")), []
    for _, result in sorted(trials, key=lambda t: t[0]):
        spent += result.tokens or 0
        if result.tokens == full:
            scores = result.metrics["validation"]
            if scores.kl is None:
                raise SystemExit("the trials carry no KL: the searches must use fitness kl")
            best = min(best, (scores.kl, scores.quality))
            points.append((spent, *best))
    return points


def compare(single: list[tuple[int, EvalResult]], multi: list[tuple[int, EvalResult]]) -> dict:
    """Single fidelity's final best (its KL, the fitness, and that candidate's validation perplexity) as
    bars, and the multi-fidelity arm's tokens until its best-so-far first reaches each."""
    one, many = curve(single), curve(multi)
    out: dict = {"single_tokens": one[-1][0], "multi_tokens": many[-1][0], "single_curve": one, "multi_curve": many}
    for index, name in ((1, "kl"), (2, "ppl")):
        bar = one[-1][index]
        reach = next((point[0] for point in many if point[index] <= bar), None)
        out |= {
            f"single_best_{name}": bar,
            f"multi_best_{name}": many[-1][index],
            f"multi_tokens_to_reach_{name}": reach,
            f"ratio_{name}": None if reach is None else reach / one[-1][0],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--single", type=int, default=160, help="Single-fidelity budget (10 generations of 16).")
    ap.add_argument("--multi", type=int, default=416, help="Multi-fidelity budget (16 generations of 16+8+2).")
    ap.add_argument("--out", default="docs/results/fidelity-ablation.json")
    args = ap.parse_args()
    seeds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            single = run({}, seed, args.single, Path(tmp))
            multi = run(STAGES, seed, args.multi, Path(tmp))
            entry = {"seed": seed, "single_job": single.summary.job_id, "multi_job": multi.summary.job_id}
            entry |= compare(single.trials, multi.trials)
            entry |= {
                "single_test_ppl": single.summary.best.quality("test"),
                "multi_test_ppl": multi.summary.best.quality("test"),
                "single_validation_ppl": single.summary.best.quality("validation"),
                "multi_validation_ppl": multi.summary.best.quality("validation"),
                "single_wall_s": single.wall_seconds,
                "multi_wall_s": multi.wall_seconds,
            }
            seeds.append(entry)
            print(json.dumps({k: v for k, v in entry.items() if not k.endswith("curve")}), file=sys.stderr)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(seeds, indent=1))
    print_table(seeds)


def print_table(seeds: list[dict]) -> None:
    print(
        "| seed | single: tokens, KL, val ppl | multi: tokens to reach that KL | ... that val ppl | multi: tokens, KL,",
        end="",
    )
    print(" val ppl | test ppl single / multi |")
    print("|---:|---|---|---|---|---|")
    for e in seeds:
        reach = {
            n: "never" if e[f"ratio_{n}"] is None else f"{e[f'multi_tokens_to_reach_{n}']:,} ({e[f'ratio_{n}']:.2f}x)"
            for n in ("kl", "ppl")
        }
        print(
            f"| {e['seed']} | {e['single_tokens']:,}, {e['single_best_kl']:.4f}, {e['single_best_ppl']:.3f} | "
            f"{reach['kl']} | {reach['ppl']} | {e['multi_tokens']:,}, {e['multi_best_kl']:.4f}, "
            f"{e['multi_best_ppl']:.3f} | {e['single_test_ppl']:.3f} / {e['multi_test_ppl']:.3f} |"
        )
    for n in ("kl", "ppl"):
        ratios = [e[f"ratio_{n}"] for e in seeds if e[f"ratio_{n}"] is not None]
        if ratios:
            mean = statistics.mean(ratios)
            print(f"\n{n}: mean ratio over seeds that reached the bar {mean:.2f}x ({len(ratios)}/{len(seeds)})")


if __name__ == "__main__":
    main()
