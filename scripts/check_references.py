"""Check prunehive's SparseGPT solver and ``metric: wanda`` masks against the published rules, each
implemented on its own in ``reference_rules.py`` (with the conventions it follows). prunehive's Wanda
masks are compared with the default layer-wide rule and with ``per_row``.

Every layer is pruned on the dense model's calibration inputs (no earlier layer pruned), the same inputs
for both sides. Reported: the share of positions whose pruned/kept state agrees; each side's held-out
output error ‖ΔW X‖² / ‖W X‖² on validation inputs (mean over layers); for SparseGPT, prunehive's time
over ``reference_rules.py``'s (CPU time on one thread, best of ``--repeats``; that implementation
skips the reference's loss bookkeeping, so it is a little faster than the reference's own code); and the
weights on dead inputs each side keeps. Models: digits-mlp (constant pixels, dead ReLU units), code-lm's
Llama (all 28 projections), and code-lm's block-1 down_proj with every 10th input zeroed, its inputs
scaled by 0.1, 1 and 10.

    .venv/bin/python scripts/check_references.py [--json] [--llama-steps N] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch
from reference_rules import sparsegpt_rule, wanda_rule
from torch import nn

from prunehive.workers.engine import PruningEngine
from prunehive.workers.masks import Granularity
from prunehive.workers.solvers.sparsegpt import Hessian, ObsLayer
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.code_lm import CodeLMTask

SETTINGS = (("50%", 0.5, None), ("70%", 0.7, None), ("2:4", 0.5, (2, 4)))
DEAD_LAYER = "model.layers.1.mlp.down_proj"


# --- the same inputs for both sides --------------------------------------------------------------
class Inputs:
    """One layer's calibration and held-out statistics, from its own hook."""

    def __init__(self, module: nn.Linear, keep_raw: bool = False) -> None:
        self.module, self.keep_raw = module, keep_raw
        self.prunehive = Hessian(module)  # the solver's own accumulator, fed the same inputs
        cols = module.weight.shape[1]
        self.xxt, self.heldout = torch.zeros(cols, cols, dtype=torch.float64), torch.zeros(cols, cols)
        self.sequences = 0
        self.raw: dict[str, list[torch.Tensor]] = {"calibration": [], "heldout": []}

    def add(self, x: torch.Tensor, split: str) -> None:
        seqs = x.reshape(-1, x.shape[-2] if x.dim() > 2 else 1, x.shape[-1]).float()
        flat = seqs.reshape(-1, seqs.shape[-1])
        if self.keep_raw:
            self.raw[split].append(seqs.clone())
        if split == "heldout":
            self.heldout += flat.t() @ flat
            return
        self.prunehive.add(x)
        self.xxt += (flat.t() @ flat).double()
        self.sequences += seqs.shape[0] if x.dim() > 2 else 1  # a 2-D input is one sample, as the references count

    @property
    def reference_h(self) -> torch.Tensor:
        return (2.0 * self.xxt / self.sequences).float()

    @property
    def sq_norms(self) -> torch.Tensor:
        return (self.xxt.diagonal() / self.sequences).float()


def collect(model: nn.Module, names: list[str], calib: list[Any], heldout: Any, raw: str = "") -> dict[str, Inputs]:
    modules = dict(model.named_modules())
    stats = {n: Inputs(modules[n], keep_raw=n == raw) for n in names}  # type: ignore[arg-type]
    split = ["calibration"]
    hooks = [
        modules[n].register_forward_hook(lambda _m, a, _o, n=n: stats[n].add(a[0].detach(), split[0])) for n in names
    ]
    with torch.no_grad():
        for x, _ in calib:
            model(x)
        split[0] = "heldout"
        for i in range(0, len(heldout[0]), 32):
            model(heldout[0][i : i + 32])
    for hook in hooks:
        hook.remove()
    return stats


# --- the comparisons -----------------------------------------------------------------------------
def output_error(w: torch.Tensor, pruned: torch.Tensor, heldout: torch.Tensor) -> float:
    delta = (w - pruned).double()
    return float(
        torch.trace(delta @ heldout.double() @ delta.t()) / torch.trace(w.double() @ heldout.double() @ w.double().t())
    )


class Tally:
    """One setting's figures, pooled over layers; a weight is pruned where it is zero."""

    def __init__(self) -> None:
        self.same = self.total = self.dead = self.kept = self.ref_kept = 0
        self.errors: list[float] = []
        self.ref_errors: list[float] = []
        self.seconds = self.ref_seconds = 0.0

    def add(self, s: Inputs, ours: torch.Tensor, ref: torch.Tensor) -> None:
        w = s.module.weight.detach().float()
        dead = s.xxt.diagonal() == 0
        self.same += int(((ours == 0) == (ref == 0)).sum())
        self.total += w.numel()
        self.dead += int(dead.sum()) * w.shape[0]
        self.kept += int((ours[:, dead] != 0).sum())
        self.ref_kept += int((ref[:, dead] != 0).sum())
        self.errors.append(output_error(w, ours, s.heldout))
        self.ref_errors.append(output_error(w, ref, s.heldout))

    def row(self) -> dict[str, Any]:
        return {
            "agreement": self.same / self.total,
            "positions": self.total,
            "heldout_error": sum(self.errors) / len(self.errors),
            "reference_heldout_error": sum(self.ref_errors) / len(self.ref_errors),
            "dead_weights": self.dead,
            "dead_weights_kept": self.kept,
            "reference_dead_weights_kept": self.ref_kept,
            "time_ratio": self.seconds / self.ref_seconds if self.ref_seconds else None,
        }


def timed(fn: Any, repeats: int) -> tuple[torch.Tensor, float]:
    """The result and the best of ``repeats`` CPU times on one thread: steady on a busy machine, where
    wall times of a few milliseconds are not."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best, out = float("inf"), None
    try:
        for _ in range(repeats):
            start = time.process_time()
            out = fn()
            best = min(best, time.process_time() - start)
    finally:
        torch.set_num_threads(threads)
    return out, best  # type: ignore[return-value]


def compare_sparsegpt(
    stats: dict[str, Inputs], sparsity: float, nm: tuple[int, int] | None, repeats: int
) -> dict[str, Any]:
    """prunehive's solver (H as its ``Hessian`` keeps it) against the reference rule (H = 2/n Σxxᵀ)."""
    gran = Granularity.parse(f"{nm[0]}:{nm[1]}" if nm else "unstructured")
    tally = Tally()
    for s in stats.values():
        w = s.module.weight.detach().float()
        ours, seconds = timed(lambda s=s, w=w: ObsLayer(w, s.prunehive.mean()).prune(sparsity, gran), repeats)
        ref, ref_seconds = timed(lambda s=s, w=w: sparsegpt_rule(w, s.reference_h, sparsity, nm), repeats)
        tally.seconds, tally.ref_seconds = tally.seconds + seconds, tally.ref_seconds + ref_seconds
        tally.add(s, ours, ref)
    return tally.row()


def compare_wanda(engine: Any, stats: dict[str, Inputs], sparsity: float, nm: tuple[int, int] | None) -> dict[str, Any]:
    """prunehive's ``metric: wanda`` masks (the engine's rankings, from its own calibration pass) against Wanda's."""
    tally = Tally()
    for name, s in stats.items():
        w = s.module.weight.detach().float()
        tally.add(s, w * engine.rankings[name].mask(sparsity), w * wanda_rule(w, s.sq_norms, sparsity, nm))
    return tally.row()


def dead_inputs(stats: Inputs, scales: tuple[float, ...] = (0.1, 1.0, 10.0)) -> Iterator[tuple[str, dict[str, Inputs]]]:
    """The layer's own inputs with every 10th one zeroed and all scaled: a layer with dead inputs."""
    for scale in scales:
        scaled = Inputs(stats.module)
        for split in ("calibration", "heldout"):
            for x in stats.raw[split]:
                x = x.clone()
                x[..., ::10] = 0.0
                scaled.add(x * scale, split)
        yield f"x{scale:g}", {DEAD_LAYER: scaled}


def models(llama_steps: int) -> Iterator[tuple[str, Any, int]]:
    class ShortCodeLM(CodeLMTask):
        train_steps = llama_steps

    yield "digits-mlp", load_task("digits-mlp"), 8
    yield (
        ("code-lm" if not llama_steps else f"code-lm/{llama_steps}"),
        (ShortCodeLM(seed=0) if llama_steps else load_task("code-lm")),
        8,
    )


def measure(llama_steps: int, repeats: int) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    rows: list[dict[str, Any]] = []
    for label, task, batches in models(llama_steps):
        model = task.model()
        names = task.prunable_layers(model)
        stats = collect(model, names, task.calibration_batches(batches), task.split("validation"), raw=DEAD_LAYER)
        engines: dict[tuple[str, bool], Any] = {}
        for setting, sparsity, nm in SETTINGS:
            result = compare_sparsegpt(stats, sparsity, nm, repeats)
            rows.append({"rule": "sparsegpt", "model": label, "setting": setting, **result})
            for per_row in (True, False):
                gran = f"{nm[0]}:{nm[1]}" if nm else "unstructured"
                if (gran, per_row) not in engines:
                    engines[gran, per_row] = PruningEngine(task, "wanda", gran, per_row, calibration_batches=batches)
                result = compare_wanda(engines[gran, per_row], stats, sparsity, nm)
                rule = f"wanda per_row={str(per_row).lower()}"
                rows.append({"rule": rule, "model": label, "setting": setting, **result})
        if DEAD_LAYER in stats:
            for scale, layer in dead_inputs(stats[DEAD_LAYER]):
                result = compare_sparsegpt(layer, 0.5, None, repeats)
                rows.append({"rule": "sparsegpt", "model": f"{label} down_proj.1 dead/10", "setting": f"50% {scale}"})
                rows[-1].update(result)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    line = "{:<19} {:<27} {:<8} {:>9} {:>9} {:>9} {:>15} {:>5}"
    print(line.format("rule", "model", "setting", "agree", "error", "ref error", "dead kept", "time"))
    for r in rows:
        agree = f"{100 * r['agreement']:.3f}%"
        kept = f"{r['dead_weights_kept']}/{r['reference_dead_weights_kept']} of {r['dead_weights']}"
        ratio = f"{r['time_ratio']:.2f}" if r["time_ratio"] is not None else "-"
        errors = (f"{r['heldout_error']:.3e}", f"{r['reference_heldout_error']:.3e}")
        print(line.format(r["rule"], r["model"], r["setting"], agree, *errors, kept, ratio))
    print("agree: positions pruned or kept by both; error: held-out ||dW X||^2 / ||W X||^2, mean over layers;")
    print("dead kept: weights on always-zero inputs kept (prunehive/reference); time: prunehive / reference")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument(
        "--llama-steps", type=int, default=0, help="train code-lm's Llama this many steps (0: built-in)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="time each solver this many times, keep the best")
    args = parser.parse_args(argv)
    if args.llama_steps < 0 or args.repeats < 1:
        print("error: --llama-steps must be at least 0 and --repeats at least 1", file=sys.stderr)
        return 2
    rows = measure(args.llama_steps, args.repeats)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
