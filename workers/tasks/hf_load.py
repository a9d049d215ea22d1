"""Loading local Hugging Face directories, and finding the repeated blocks whose layers are pruned.

Loading never reaches the network: the hub is switched off before transformers is imported and every
``from_pretrained`` is ``local_files_only``. Nor does it run code from the directory: ``trust_remote_code``
is False on every call, so a config naming its own Python classes (``auto_map``) is refused, never
imported (and transformers never asks on stdin whether to run it). Image processors use the PIL
backend, since torchvision cannot be imported beside the CPU torch wheel on these machines.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from prunehive.workers.tasks.base import TaskError  # noqa: E402

LOCAL_ONLY: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}  # every from_pretrained
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
# First projections of an MLP: their outputs feed only the MLP's second projection, so a removed output
# channel never touches the residual stream (Llama's gate/up, OPT's fc1, GPT-NeoX's, ViT's intermediate).
MLP_INPUTS = ("up_proj", "gate_proj", "fc1", "w1", "w3", "dense_h_to_4h", "intermediate.dense")


def quiet_transformers() -> None:
    """No progress bars from transformers: they would break the CLI's one-line and JSON output."""
    from transformers.utils import logging  # local: keeps transformers out of spec checking (preflight builds the task)

    logging.disable_progress_bar()


def load_causal_lm(directory: Path, dtype: str = "float32") -> nn.Module:
    """``AutoModelForCausalLM`` from a local directory, in ``dtype``, without a KV cache (never reused)."""
    # local: keeps transformers out of spec checking (preflight builds the task)
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=DTYPES[dtype], **LOCAL_ONLY)
    model.config.use_cache = False
    return model.eval()


def load_image_classifier(directory: Path, dtype: str = "float32") -> nn.Module:
    # local: keeps transformers out of spec checking (preflight builds the task)
    from transformers import AutoModelForImageClassification

    quiet_transformers()
    model = AutoModelForImageClassification.from_pretrained(directory, dtype=DTYPES[dtype], **LOCAL_ONLY)
    return model.eval()


def fresh_model(directory: Path, kind: str) -> nn.Module:
    """The directory's architecture with new random weights (for federated runs that train from scratch)."""
    # local: keeps transformers out of spec checking (preflight builds the task)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(directory, **LOCAL_ONLY)
    auto = AutoModelForCausalLM if kind == "causal-lm" else AutoModelForImageClassification
    return auto.from_config(config, trust_remote_code=False)


def load_tokenizer(directory: Path) -> Any:
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise TaskError(f"no tokenizer in {str(directory)!r}: expected one of {', '.join(TOKENIZER_FILES)}")
    from transformers import AutoTokenizer  # local: keeps transformers out of spec checking (preflight builds the task)

    return AutoTokenizer.from_pretrained(directory, **LOCAL_ONLY)


def load_image_processor(directory: Path) -> Any:
    if not (directory / "preprocessor_config.json").is_file():
        raise TaskError(f"{str(directory / 'preprocessor_config.json')!r} does not exist (the image processor)")
    # local: keeps transformers out of spec checking (preflight builds the task)
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(directory, **LOCAL_ONLY, backend="pil")


def repeated_blocks(model: nn.Module) -> str:
    """The name of the model's stack of blocks: the ModuleList of one block class holding most weights
    (``model.layers`` in Llama, ``model.decoder.layers`` in OPT, ``vit.encoder.layer`` in ViT)."""
    best, best_params = "", -1
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            params = sum(p.numel() for p in module.parameters())
            if params > best_params:
                best, best_params = name, params
    if best_params < 0:
        raise TaskError(f"{type(model).__name__} has no stack of repeated blocks to prune")
    return best


def block_layers(model: nn.Module, types: tuple[type[nn.Module], ...] = (nn.Linear,)) -> dict[str, str]:
    """Every layer of ``types`` inside the repeated blocks, mapped to its block (``model.layers.3``)."""
    stack = repeated_blocks(model)
    prefix = f"{stack}." if stack else ""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, types) and name.startswith(prefix):
            index = name[len(prefix) :].split(".", 1)[0]
            out[name] = f"{prefix}{index}"
    if not out:
        kinds = " or ".join(t.__name__ for t in types)
        raise TaskError(
            f"{type(model).__name__}: no {kinds} layer inside {stack!r} (GPT-2-style Conv1D layers are not pruned)"
        )
    return out


def mlp_inputs(names: list[str]) -> list[str]:
    """The layers among ``names`` whose output channels may be removed (see ``MLP_INPUTS``)."""
    return [n for n in names if n.endswith(MLP_INPUTS)]
