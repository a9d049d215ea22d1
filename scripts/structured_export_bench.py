"""CPU latency of exported structured models against the dense model, at batch 1 and 16.

For a Llama task (default code-lm-deep) it builds fixed-shape plans (fewer blocks, narrower blocks, both,
and one with widths that differ per block), zeroes the removed units in a copy of the dense model, writes
each as ``prunehive export --format hf`` does (``workers/structure/hf_export.py``), loads it back
(``from_pretrained``), checks its logits against the zeroed full-shaped model, and times it against the
dense model with the job's latency method (median of interleaved forward passes, ``workers/latency.py``).
Units are chosen by weight norm: this measures what a shape buys in speed, not which units to keep.

    .venv/bin/python scripts/structured_export_bench.py                  # code-lm-deep, batch 1 and 16
    .venv/bin/python scripts/structured_export_bench.py --json --repeats 50
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunehive.workers.latency import batch_of, paired_ms
from prunehive.workers.structure.hf_export import export_hf, load_exported
from prunehive.workers.structure.plan import BlockPlan, StructurePlan
from prunehive.workers.structure.shrink import parameter_count, zero_removed
from prunehive.workers.tasks import load_task


def _top(scores: torch.Tensor, k: int) -> tuple[int, ...]:
    """Indices of the ``k`` largest scores, in increasing index order."""
    return tuple(sorted(int(i) for i in torch.topk(scores, k).indices))


def _block(layer: Any, groups: int, channels: int, kv: int) -> BlockPlan:
    """A block keeping its ``groups`` KV groups and ``channels`` MLP channels of largest consuming-column norm."""
    o_cols = layer.self_attn.o_proj.weight.detach().norm(dim=0)
    group_norms = o_cols.reshape(kv, -1).norm(dim=1)  # a group's query heads are adjacent columns
    down_cols = layer.mlp.down_proj.weight.detach().norm(dim=0)
    return BlockPlan(kv_groups=_top(group_norms, groups), channels=_top(down_cols, channels))


def demo_plans(model: Any) -> dict[str, StructurePlan]:
    """Depth alone, width alone, both, and widths that differ per block (the per-layer export form)."""
    config = model.config
    blocks, kv, channels = config.num_hidden_layers, config.num_key_value_heads, config.intermediate_size
    layers = model.model.layers

    def keep_every(n_kept: int) -> set[int]:
        return {round(i * (blocks - 1) / (n_kept - 1)) for i in range(n_kept)}

    def plan(kept: set[int], width: Callable[[int], tuple[int, int]]) -> StructurePlan:
        return StructurePlan(
            tuple(
                _block(layers[i], *width(i), kv) if i in kept else BlockPlan(attention=False, mlp=False)
                for i in range(blocks)
            )
        )

    full = set(range(blocks))
    return {
        f"depth {blocks * 2 // 3}/{blocks}": plan(keep_every(blocks * 2 // 3), lambda i: (kv, channels)),
        f"depth {blocks // 2}/{blocks}": plan(keep_every(blocks // 2), lambda i: (kv, channels)),
        "width 1/2": plan(full, lambda i: (kv // 2, channels // 2)),
        f"depth {blocks * 3 // 4}/{blocks} + width 3/4 MLP": plan(
            keep_every(blocks * 3 // 4), lambda i: (kv, channels * 3 // 4)
        ),
        "per-layer widths": plan(full, lambda i: (kv if i % 3 == 0 else kv // 2, channels // (1 + i % 2))),
    }


def measure(dense: nn.Module, name: str, plan: StructurePlan, example: torch.Tensor, args: Any) -> dict[str, Any]:
    """Export ``plan``, reload it, and time it against ``dense`` at each batch size."""
    full = copy.deepcopy(dense)
    zero_removed(full, plan)
    with tempfile.TemporaryDirectory() as tmp:
        out = export_hf(full, plan, Path(tmp) / "export")
        small = load_exported(out.path)
        with torch.no_grad():
            diff = float((full(example, use_cache=False).logits - small(example, use_cache=False).logits).abs().max())
        row: dict[str, Any] = {
            "plan": name,
            "form": out.form,
            "params": out.parameters,
            "params_ratio": out.parameters / parameter_count(dense),
            "max_logit_diff": diff,
        }
        for batch in args.batch:
            inputs = batch_of(example, batch)
            dense_ms, ms = paired_ms(dense, small, inputs, args.repeats, args.warmup)
            row[f"b{batch}"] = {"dense_ms": dense_ms, "ms": ms, "speedup": dense_ms / ms}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="code-lm-deep", help="A Llama causal-LM task (default code-lm-deep).")
    parser.add_argument("--batch", type=int, action="append", help="Batch size (repeatable; default 1 and 16).")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default).")
    parser.add_argument("--untrained", action="store_true", help="Time the untrained architecture (same speed).")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    args = parser.parse_args()
    args.batch = args.batch or [1, 16]
    if args.threads:
        torch.set_num_threads(args.threads)
    task = load_task(args.task)
    dense = task.architecture() if args.untrained else task.model()
    dense.eval()
    example = task.example_input()
    plans = demo_plans(dense)
    if args.json:
        rows = [measure(dense, name, plan, example, args) for name, plan in plans.items()]
        print(json.dumps({"task": args.task, "threads": torch.get_num_threads(), "rows": rows}, indent=2))
        return 0
    print(f"{args.task}: dense {parameter_count(dense):,} parameters, {torch.get_num_threads()} torch threads")
    head = f"{'plan':<32} {'form':<9} {'params':>9} {'ratio':>6}"
    head += "".join(f" {f'b{b} dense ms':>12} {f'b{b} ms':>8} {f'b{b} x':>6}" for b in args.batch) + "  max|dlogit|"
    print(head, flush=True)
    for name, plan in plans.items():  # a row as soon as it is measured: a long run shows progress
        row = measure(dense, name, plan, example, args)
        line = f"{row['plan']:<32} {row['form']:<9} {row['params']:>9,} {row['params_ratio']:>6.2f}"
        for b in args.batch:
            t = row[f"b{b}"]
            line += f" {t['dense_ms']:>12.2f} {t['ms']:>8.2f} {t['speedup']:>6.2f}"
        print(line + f"  {row['max_logit_diff']:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
