"""The ``task:`` mapping of a spec: a local Hugging Face directory and the data files to score it on.

Validated here, before any worker starts, so a wrong path or a weight file cut short is one line naming
it. Relative paths are resolved against the spec file's folder when the mapping comes from a file (see
``resolve_task_paths``), else against the current directory, and stored absolute, so the job store, Ray
actors and a resumed job all read the same files. The object is what crosses to workers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prunehive.workers.tasks.weight_files import check_weight_files

Dtype = Literal["float32", "bfloat16", "float16"]
HFKind = Literal["causal-lm", "image-classification"]


class TaskError(ValueError):
    """A task that cannot be built: an unknown name, a bad factory, a missing file or directory."""


_TASK_DIRECTORIES: list[str] = []  # spec directories a ``module:factory`` task imports from, in this process


def use_spec_directory(task: object, directory: Path) -> None:
    """A ``module:factory`` task's module may sit next to its spec: put the spec's directory on this
    process's import path (after the current directory, so an installed package of the same name wins)
    and remember it for the Ray workers this process starts (``cluster.connect_ray``)."""
    if not isinstance(task, str) or ":" not in task or task.lstrip().startswith("{"):
        return
    path = str(directory.expanduser().resolve())
    if path not in sys.path:
        sys.path.append(path)
    if path not in _TASK_DIRECTORIES:
        _TASK_DIRECTORIES.append(path)


def task_directories() -> list[str]:
    """The spec directories that user task modules import from (see ``use_spec_directory``)."""
    return list(_TASK_DIRECTORIES)


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _existing(path: Path, what: str) -> Path:
    path = path.expanduser().resolve()
    if not path.exists():
        raise ValueError(f"{what} {str(path)!r} does not exist")
    return path


class DataPaths(BaseModel):
    """Per split, a file or a directory: text files for a language model, class folders for images."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    calibration: Path
    validation: Path
    test: Path

    @field_validator("calibration", "validation", "test")
    @classmethod
    def _exists(cls, v: Path) -> Path:
        return _existing(v, "path")


class MaxTokens(BaseModel):
    """Tokens read per split (null: the whole split, streamed afresh on every pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    calibration: int | None = Field(65536, ge=1)
    validation: int | None = Field(131072, ge=1)
    test: int | None = Field(262144, ge=1)


class HFTaskSpec(BaseModel):
    """``task: {hf: DIR, data: {calibration, validation, test}, seq_len, max_tokens, dtype}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hf: Path = Field(description="A local Hugging Face model directory (never a hub id: nothing is downloaded).")
    data: DataPaths
    seq_len: int = Field(512, ge=1, description="Tokens per window (language models).")
    max_tokens: MaxTokens = Field(default_factory=MaxTokens)
    dtype: Dtype = "float32"

    @field_validator("hf")
    @classmethod
    def _directory(cls, v: Path) -> Path:
        path = _existing(v, "directory")
        if not path.is_dir():
            raise ValueError(f"{str(path)!r} is not a directory (hf: takes a local Hugging Face model directory)")
        if not (path / "config.json").is_file():
            raise ValueError(f"{str(path / 'config.json')!r} does not exist (hf: needs a save_pretrained directory)")
        if not any((path / name).is_file() for name in WEIGHT_FILES):
            raise ValueError(f"no weights in {str(path)!r}: expected one of {', '.join(WEIGHT_FILES)}")
        check_weight_files(path)  # a file cut short fails here, not inside a worker
        return path

    @property
    def kind(self) -> HFKind:
        """What the directory holds, read from its config.json (no torch, no transformers import)."""
        return hf_kind(self.hf)

    @property
    def label(self) -> str:
        """A short name for job names and experiments: the model directory's name."""
        return self.hf.name

    def __str__(self) -> str:
        return self.label  # job names and MLflow params read the task as text


def hf_kind(directory: Path) -> HFKind:
    """``causal-lm`` or ``image-classification`` from config.json's architectures or model type."""
    config = json.loads((directory / "config.json").read_text())
    archs = config.get("architectures") or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return "causal-lm"
    if any(a.endswith("ForImageClassification") for a in archs):
        return "image-classification"
    from transformers.models.auto.modeling_auto import (  # local: keeps transformers out of spec validation
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    )

    model_type = config.get("model_type")
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "causal-lm"
    if model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "image-classification"
    raise ValueError(
        f"{str(directory)!r} holds neither a causal language model nor an image classifier "
        f"(architectures {archs}, model_type {model_type!r})"
    )


def _against(value: Any, base: Path) -> Any:
    if not isinstance(value, str):
        return value
    path = Path(value).expanduser()
    return value if path.is_absolute() else str(base / path)


def resolve_task_paths(task: Any, base: Path) -> Any:
    """A ``task:`` mapping read from a file, with its relative ``hf:`` and ``data:`` paths joined to the
    file's folder ``base`` (as docker-compose resolves paths), so a spec runs the same from any directory.
    Anything that is not a mapping (a task name, ``module:factory``) comes back as it is."""
    if not isinstance(task, dict):
        return task
    out = dict(task)
    if "hf" in out:
        out["hf"] = _against(out["hf"], base)
    if isinstance(out.get("data"), dict):
        out["data"] = {split: _against(path, base) for split, path in out["data"].items()}
    return out


def parse_task_mapping(data: Any) -> HFTaskSpec:
    """The typed task mapping, or one ValueError naming the field: ``data.test: path '...' does not exist``."""
    if isinstance(data, HFTaskSpec):
        return data
    try:
        spec = HFTaskSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = "unknown field (a task mapping takes hf, data, seq_len, max_tokens, dtype)"
        elif first["type"] == "missing":
            msg = "missing (a task mapping needs hf: DIR and data: {calibration, validation, test})"
        raise ValueError(f"{where}: {msg}" if where else msg) from None
    hf_kind(spec.hf)  # an unsupported model fails here, at validation, not in a worker
    return spec
