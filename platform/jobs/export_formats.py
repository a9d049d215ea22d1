"""The files ``prunehive export`` writes: a Hugging Face directory, a state dict, or an llm-compressor recipe,
each beside ``prunehive.json`` (what was pruned, how, by which job, and the quality it was measured at).

The recipe follows llm-compressor's one-shot sparsity modifiers (``SparseGPTModifier`` and
``WandaPruningModifier``, whose ``sparsity`` may be a dict of target module name to sparsity, with
``targets`` naming those modules and ``mask_structure`` an ``N:M`` pattern, ``0:0`` for unstructured).
Its ``MagnitudePruningModifier`` takes one global sparsity only, so a candidate ranked by any metric
other than Wanda is written for SparseGPT, which reproduces the allocation with its own weight choice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from prunehive.workers.granularity import Granularity
from prunehive.workers.tasks.spec import HFTaskSpec

FORMATS = ("hf", "torch", "recipe")
INFO = "prunehive.json"
# Files of a model directory that hold weights: save_pretrained writes the pruned ones instead.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".index.json")


def _write_info(out: Path, info: dict[str, Any]) -> None:
    (out / INFO).write_text(json.dumps(info, indent=2, default=str) + "\n")


def _listing(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def write_hf(model: Any, task: HFTaskSpec, out: Path, info: dict[str, Any]) -> list[str]:
    """A ``save_pretrained`` directory (safetensors) with the source directory's tokenizer or image
    processor files, so ``from_pretrained`` loads model and preprocessing from ``out`` alone."""
    source = json.loads((task.hf / "config.json").read_text())
    if hasattr(model.config, "use_cache"):  # the task switched the KV cache off for scoring; a user wants it back
        model.config.use_cache = source.get("use_cache", True)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    for path in sorted(task.hf.iterdir()):
        if path.is_file() and not (out / path.name).exists() and not path.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(path, out / path.name)
    _write_info(out, info)
    return _listing(out)


def write_torch(model: Any, out: Path, info: dict[str, Any]) -> list[str]:
    """``model.pt``: the state dict, pruned weights zeroed, for the task's own architecture."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    _write_info(out, info)
    return _listing(out)


def recipe(sparsity: dict[str, float], metric: str, granularity: str) -> dict[str, Any]:
    """An llm-compressor recipe with one pruning modifier carrying the per-layer sparsity dict."""
    gran = Granularity.parse(granularity)
    modifier = "WandaPruningModifier" if metric == "wanda" else "SparseGPTModifier"
    args: dict[str, Any] = {
        "sparsity": {name: float(s) for name, s in sparsity.items()},
        "mask_structure": f"{gran.n}:{gran.m}" if gran.kind == "nm" else "0:0",
        "targets": list(sparsity),
    }
    return {"sparsity_stage": {"sparsity_modifiers": {modifier: args}}}


def write_recipe(
    sparsity: dict[str, float], metric: str, granularity: str, out: Path, info: dict[str, Any]
) -> list[str]:
    """``recipe.yaml`` for llm-compressor's ``oneshot``, headed by where its numbers come from."""
    out.mkdir(parents=True, exist_ok=True)
    head = (
        f"# prunehive job {info['job_id']}, candidate {info['candidate_id']}: per-layer sparsity found with "
        f"metric {metric}, granularity {granularity}\n"
    )
    body = yaml.safe_dump(recipe(sparsity, metric, granularity), sort_keys=False, width=1000)
    (out / "recipe.yaml").write_text(head + body)
    _write_info(out, info)
    return _listing(out)
