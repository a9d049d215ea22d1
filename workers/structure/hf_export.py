"""Write a structured candidate as a smaller Hugging Face model directory, and load one back.

Two forms, chosen by the plan:
- **plain**: every kept block keeps both sublayers and the same widths (only depth and one width
  change). ``config.json`` is a plain Llama config (``num_hidden_layers``, ``num_attention_heads``,
  ``num_key_value_heads``, ``intermediate_size``, with ``head_dim`` explicit) and
  ``AutoModelForCausalLM.from_pretrained(dir)`` loads it with no remote code.
- **per-layer**: widths differ between blocks, or a block lost its attention or MLP alone.
  ``config.json`` lists each block's widths (``layer_num_attention_heads``,
  ``layer_num_key_value_heads``, ``layer_intermediate_sizes``) and names prunehive's modelling file,
  written beside it, in ``auto_map``; ``from_pretrained(dir, trust_remote_code=True)`` loads it, as
  Nemotron-NAS and DeciLM models load.
``load_exported`` reads either form back, and trusts a directory's code only when the modelling file is
byte for byte prunehive's own, so a user's directory is never executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoModelForCausalLM

from prunehive.workers.structure import modeling_prunehive_llama
from prunehive.workers.structure.modeling_prunehive_llama import PrunedLlamaConfig
from prunehive.workers.structure.plan import StructurePlan
from prunehive.workers.structure.shrink import parameter_count, shrink
from prunehive.workers.tasks.hf_load import quiet_transformers

MODELING_FILE = "modeling_prunehive_llama.py"
AUTO_MAP = {
    "AutoConfig": "modeling_prunehive_llama.PrunedLlamaConfig",
    "AutoModelForCausalLM": "modeling_prunehive_llama.PrunedLlamaForCausalLM",
}


class ExportError(ValueError):
    """A directory that is not a prunehive structured export, or whose modelling file is not prunehive's."""


@dataclass(frozen=True)
class Exported:
    """What was written: ``form`` is ``plain`` or ``per-layer``; ``trust_remote_code`` whether loading
    it needs the modelling file; ``parameters`` those of the smaller model."""

    path: Path
    form: str
    trust_remote_code: bool
    parameters: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "form": self.form,
            "trust_remote_code": self.trust_remote_code,
            "parameters": self.parameters,
        }


def modeling_source() -> str:
    """The text of prunehive's modelling file, as export writes it."""
    return Path(modeling_prunehive_llama.__file__).read_text()


def write_shrunk(small: nn.Module, dest: Path, tokenizer: Any | None = None) -> Exported:
    """Save an already shrunk model (``shrink``'s result) and, when given, its tokenizer under ``dest``."""
    quiet_transformers()
    dest.mkdir(parents=True, exist_ok=True)
    per_layer = isinstance(small.config, PrunedLlamaConfig)  # type: ignore[union-attr]
    small.save_pretrained(dest)  # type: ignore[operator]
    if tokenizer is not None:
        tokenizer.save_pretrained(dest)
    if per_layer:
        (dest / MODELING_FILE).write_text(modeling_source())
        config_path = dest / "config.json"
        config = json.loads(config_path.read_text())
        config["auto_map"] = dict(AUTO_MAP)
        config["architectures"] = ["PrunedLlamaForCausalLM"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    else:
        (dest / MODELING_FILE).unlink(missing_ok=True)  # no stale code beside a plain config
    return Exported(dest, "per-layer" if per_layer else "plain", per_layer, parameter_count(small))


def export_hf(model: nn.Module, plan: StructurePlan, dest: Path, tokenizer: Any | None = None) -> Exported:
    """Write the smaller model ``plan`` keeps of ``model`` (full-shaped, removed units already zeroed or
    reconstructed) as a Hugging Face directory; ``model`` is left unchanged."""
    return write_shrunk(shrink(model, plan), dest, tokenizer)


def needs_remote_code(path: Path) -> bool:
    """Whether the directory's config names a modelling file (``auto_map``)."""
    config = json.loads((path / "config.json").read_text())
    return bool(config.get("auto_map"))


def load_exported(path: Path, dtype: str = "float32") -> nn.Module:
    """Load an export of either form; code is trusted only when it is prunehive's own modelling file."""
    if not (path / "config.json").is_file():
        raise ExportError(f"{str(path)!r} has no config.json; not a Hugging Face model directory")
    quiet_transformers()
    remote = needs_remote_code(path)
    if remote:
        code = path / MODELING_FILE
        config = json.loads((path / "config.json").read_text())
        if config.get("auto_map") != AUTO_MAP or not code.is_file() or code.read_text() != modeling_source():
            raise ExportError(f"{str(path)!r} names modelling code that is not prunehive's own; refusing to run it")
    model: nn.Module = AutoModelForCausalLM.from_pretrained(
        path, trust_remote_code=remote, dtype=dtype, local_files_only=True
    )
    model.eval()
    return model
