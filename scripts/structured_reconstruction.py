"""Layer output error of structured removal, with and without least-squares reconstruction, on held-out
inputs, as a Markdown table: one row per unit kind (``head``: KV groups feeding ``o_proj``; ``channel``:
MLP channels feeding ``down_proj``) and level (the fraction of each layer's units removed, least important
first). Errors are relative, ||X (W' - W)^T||^2 / ||X W^T||^2 on validation inputs the fit never saw, and
averaged over the layers; ``wins`` counts the layers where reconstruction is at or below removal.

    .venv/bin/python scripts/structured_reconstruction.py --task code-lm
    .venv/bin/python scripts/structured_reconstruction.py --task my-llama.yaml   # task: {hf: DIR, data: ...}
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from prunehive.workers.structure.errors import LEVELS, reconstruction_errors, summarise
from prunehive.workers.tasks import load_task


def table(task: str, rows: list[dict[str, float]]) -> str:
    lines = [
        f"{task}: relative layer output error on held-out inputs",
        "",
        "| units | level removed | layers | plain removal | reconstruction | reconstruction wins |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['level']:.3f} | {r['layers']} | {r['removal']:.4f} | {r['reconstruction']:.4f} "
            f"| {r['wins']}/{r['layers']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", help="built-in name or a YAML task mapping (repeatable)")
    parser.add_argument("--levels", type=float, nargs="+", default=list(LEVELS))
    parser.add_argument("--importance", choices=("activation", "taylor"), default="activation")
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--heldout-batches", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print every layer's row as JSON instead")
    args = parser.parse_args()
    ok = True
    for name in args.task or ["code-lm"]:
        start = time.perf_counter()
        rows = reconstruction_errors(
            load_task(name), tuple(args.levels), args.calibration_batches, args.heldout_batches, args.importance
        )
        summary = summarise(rows)
        ok = ok and all(s["wins"] == s["layers"] for s in summary)
        if args.json:
            print(json.dumps({"task": name, "rows": [r.to_dict() for r in rows], "summary": summary}))
        else:
            print(table(name, summary) + "\n")
        print(f"{name}: {len(rows)} layer-levels in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
