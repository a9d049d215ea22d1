"""Check prunehive's SparseGPT solver and ``metric: wanda`` masks against the published rules, each
implemented here on its own (nothing below calls prunehive's solver code, metrics or masks to compute a
reference).

SparseGPT (Frantar & Alistarh 2023), with IST-DASLab/sparsegpt's conventions: H = 2/n Σxxᵀ over n
calibration sequences; inputs that were always zero get diagonal 1 and zero weights; damping 1% of the
mean diagonal; U = upper Cholesky factor of H⁻¹; columns in blocks of 128, each block's mask chosen on its
current weights by w² / U_jj² (unstructured: scores at or below the ⌊sparsity·size⌋-th smallest; N:M: the
M-N lowest of every M), each pruned weight's error spread over the columns to its right by U's row.
Wanda (Sun et al. 2024), as locuslab/wanda's ``prune_wanda``: score |W|·‖X‖ with ‖X‖² averaged over
sequences; in each output row the ⌊sparsity·columns⌋ lowest go (stable sort), or the M-N lowest of each
N:M group. prunehive's Wanda masks are compared with the default layer-wide rule and with ``per_row``.

Every layer is pruned on the dense model's calibration inputs (no earlier layer pruned), the same inputs
for both sides. Reported: the share of positions whose pruned/kept state agrees; each side's held-out
output error ‖ΔW X‖² / ‖W X‖² on validation inputs (mean over layers); for SparseGPT, prunehive's time
over this file's implementation's (CPU time on one thread, best of ``--repeats``; that implementation
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
from torch import nn

SETTINGS = (("50%", 0.5, None), ("70%", 0.7, None), ("2:4", 0.5, (2, 4)))
DEAD_LAYER = "model.layers.1.mlp.down_proj"


# --- the references, from the papers -------------------------------------------------------------
def sparsegpt_rule(w: torch.Tensor, h: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """OBS pruning of ``w`` given H = 2/n Σxxᵀ, with the conventions in the module docstring."""
    w, h = w.detach().float().clone(), h.clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(0.01 * h.diagonal().mean())
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    for a in range(0, w.shape[1], 128):
        b = min(a + 128, w.shape[1])
        wb, ub = w[:, a:b].clone(), u[a:b, a:b]
        d = ub.diagonal()
        err = torch.zeros_like(wb)
        drop = torch.zeros_like(wb, dtype=torch.bool)
        if nm is None:
            saliency = wb.pow(2) / d.pow(2)
            drop = saliency <= saliency.flatten().sort().values[int(saliency.numel() * sparsity)]
        for j in range(b - a):
            if nm is not None and j % nm[1] == 0:
                saliency = wb[:, j : j + nm[1]].pow(2) / d[j : j + nm[1]].pow(2)
                drop.scatter_(1, j + saliency.topk(nm[1] - nm[0], dim=1, largest=False).indices, True)
            q = wb[:, j].masked_fill(drop[:, j], 0.0)
            e = (wb[:, j] - q) / d[j]
            wb[:, j:] -= e.unsqueeze(1) * ub[j, j:].unsqueeze(0)
            wb[:, j] = q
            err[:, j] = e
        w[:, a:b] = wb
        w[:, b:] -= err @ u[a:b, b:]
    return w


def wanda_rule(w: torch.Tensor, sq: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """Wanda's keep-mask: |W|·‖X‖ compared within each output row (or each N:M group)."""
    score = w.detach().float().abs() * sq.sqrt().unsqueeze(0)
    drop = torch.zeros_like(score, dtype=torch.bool)
    if nm is None:
        drop.scatter_(1, score.sort(dim=1, stable=True).indices[:, : int(score.shape[1] * sparsity)], True)
    else:
        for j in range(0, score.shape[1], nm[1]):
            group = score[:, j : j + nm[1]]
            drop.scatter_(1, j + group.topk(nm[1] - nm[0], dim=1, largest=False).indices, True)
    return ~drop


# --- the same inputs for both sides --------------------------------------------------------------
class Inputs:
    """One layer's calibration and held-out statistics, from its own hook."""

    def __init__(self, module: nn.Linear, keep_raw: bool = False) -> None:
        from prunehive.workers.solvers.sparsegpt import Hessian  # the solver's own accumulator, fed the same

        self.module, self.keep_raw = module, keep_raw
        self.prunehive = Hessian(module)
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
    from prunehive.workers.masks import Granularity
    from prunehive.workers.solvers.sparsegpt import ObsLayer

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
    from prunehive.workers.tasks import load_task
    from prunehive.workers.tasks.code_lm import CodeLMTask

    class ShortCodeLM(CodeLMTask):
        train_steps = llama_steps

    yield "digits-mlp", load_task("digits-mlp"), 8
    yield (
        ("code-lm" if not llama_steps else f"code-lm/{llama_steps}"),
        (ShortCodeLM(seed=0) if llama_steps else load_task("code-lm")),
        8,
    )


def measure(llama_steps: int, repeats: int) -> list[dict[str, Any]]:
    from prunehive.workers.engine import PruningEngine

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
