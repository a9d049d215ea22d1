"""The files ``prunehive export`` writes: a Hugging Face directory, a state dict, or an llm-compressor recipe,
each beside ``prunehive.json`` (what was pruned, how, by which job, and the quality it was measured at).

The recipe is for llm-compressor's one-shot sparsity modifiers (checked against llm-compressor 0.14 by
``tests/platform/test_llmcompressor_recipe.py``). Their ``sparsity`` is one number or a list indexed by
position among the modules ``targets`` matches, and llm-compressor enumerates those in the model's module
order, not the order ``targets`` lists them in. The recipe therefore names the candidate's pruned layers
exactly, in the job's layer order (the model's module order, as every task lists its prunable layers),
with the sparsity each layer had in the job. An ``N:M`` job prunes a layer to a whole number of weights
per group of M, which may differ from layer to layer, and llm-compressor's ``mask_structure`` ``"P:M"``
prunes P weights of every M (``"2:4"`` is prunehive's ``2:4``, ``"3:4"`` prunehive's ``1:4``), one
pattern per modifier: such a recipe has one modifier group per pattern. ``per_row`` changes which weights
compete, not the per-layer allocation, so it is exported too (llm-compressor's Wanda compares within rows).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
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
    """``model.pt``: the state dict, pruned weights zeroed, for the task's own architecture (a channel
    candidate's: the physically smaller model's, each layer at its kept width)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    _write_info(out, info)
    return _listing(out)


# prunehive's own SparseGPT solver: blocks of 128 columns, damping 1% of the Hessian's mean diagonal.
SPARSEGPT_ARGS: dict[str, Any] = {"block_size": 128, "dampening_frac": 0.01}


def modifier_for(metric: str, solver: str) -> tuple[str, str | None]:
    """The llm-compressor modifier for a job's solver and metric, and a note where it chooses the pruned
    weights differently from the job (it still prunes each layer to the job's sparsity)."""
    if solver == "sparsegpt":
        if metric == "magnitude":  # the solver's own saliency: SparseGPT as the paper and llm-compressor run it
            return "SparseGPTModifier", None
        return "SparseGPTModifier", (
            f"the job chose weights by {metric} under SparseGPT's update; SparseGPTModifier by its own saliency"
        )
    if metric == "wanda":
        return "WandaPruningModifier", None
    return "SparseGPTModifier", (
        f"llm-compressor has no one-shot modifier for metric {metric} with per-layer sparsities (its "
        "MagnitudePruningModifier is a training schedule with one sparsity); SparseGPTModifier keeps the "
        "allocation, chooses weights by its own saliency and updates the rest"
    )


def recipe(layers: dict[str, float], metric: str, granularity: str, solver: str = "mask") -> dict[str, Any]:
    """An llm-compressor recipe pruning each of ``layers`` (name -> sparsity, in the model's module order) to
    its sparsity; layers at 0 are left out, as SparseGPT would still remove one weight a block of them."""
    gran = Granularity.parse(granularity)
    if gran.kind == "channel":
        raise ValueError("--format recipe: llm-compressor's pruning modifiers take unstructured or N:M sparsity")
    modifier, _ = modifier_for(metric, solver)
    extra = SPARSEGPT_ARGS if modifier == "SparseGPTModifier" else {}
    pruned = {name: float(s) for name, s in layers.items() if s > 0}
    if not pruned:
        raise ValueError("--format recipe: the candidate prunes no weight")
    if gran.kind != "nm":
        args = {"sparsity": list(pruned.values()), "mask_structure": "0:0", "targets": list(pruned), **extra}
        return {"sparsity_stage": {"sparsity_modifiers": {modifier: args}}}
    patterns: dict[int, list[str]] = {}
    for name, s in pruned.items():  # an N:M layer's sparsity is a whole number of pruned weights per group
        patterns.setdefault(round(s * gran.m), []).append(name)
    groups = {
        f"sparsity_{p}_{gran.m}_modifiers": {
            modifier: {"sparsity": p / gran.m, "mask_structure": f"{p}:{gran.m}", "targets": names, **extra}
        }
        for p, names in sorted(patterns.items())
    }
    return {"sparsity_stage": groups}


def write_recipe(
    layers: dict[str, float], metric: str, granularity: str, out: Path, info: dict[str, Any], solver: str = "mask"
) -> list[str]:
    """``recipe.yaml`` for llm-compressor's ``oneshot``, headed by where its numbers come from; ``layers`` are
    the candidate's per-layer sparsities as the job measured them."""
    body = yaml.safe_dump(recipe(layers, metric, granularity, solver), sort_keys=False, width=1000)
    _, note = modifier_for(metric, solver)
    head = (
        f"# prunehive job {info['job_id']}, candidate {info['candidate_id']}: per-layer sparsity found with "
        f"metric {metric}, granularity {granularity}, solver {solver}\n"
        "# llm-compressor indexes each `sparsity` list by position among the modules `targets` matches, in the "
        "model's module order: the order listed here\n"
    )
    if note:
        head += f"# note: {note}\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(head + body)
    _write_info(out, info)
    return _listing(out)
