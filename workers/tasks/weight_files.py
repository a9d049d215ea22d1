"""Cheap checks of a model directory's weight files, run when a spec is read (no torch import).

A file cut short by an interrupted copy or download otherwise fails inside a worker, after the job
exists, with the loading library's own words ("incomplete metadata, file not fully covered"). Reading
a safetensors file's header and comparing the bytes it describes with the file's size catches that
in microseconds, whatever the model's size; a zipped ``torch.save`` file's central directory sits at
its end, so opening it as a zip catches a cut one as cheaply.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

MAX_HEADER = 100_000_000  # safetensors refuses larger headers


class WeightFileError(ValueError):
    """A weight file that cannot be loaded: the message names the file and what is wrong with it."""


def _header(path: Path, size: int) -> tuple[dict[str, object], int]:
    """The parsed JSON header and where the tensors' bytes start."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise WeightFileError(f"{str(path)!r} is cut short: {size} bytes, not even a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > MAX_HEADER:
            raise WeightFileError(f"{str(path)!r} is not a safetensors file (its header length is {length:,} bytes)")
        if 8 + length > size:
            raise WeightFileError(
                f"{str(path)!r} is cut short: {size:,} bytes, but its header alone needs {8 + length:,}"
            )
        text = f.read(length)
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise WeightFileError(f"{str(path)!r} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise WeightFileError(f"{str(path)!r} is not a safetensors file (its header is not a mapping)")
    return header, 8 + length


def check_safetensors(path: Path) -> None:
    """The file's tensors, as its header describes them, end exactly where the file ends."""
    size = path.stat().st_size
    header, start = _header(path, size)
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise WeightFileError(f"{str(path)!r}: tensor {name!r} has no valid data_offsets in its header")
        end = max(end, offsets[1])
    if start + end > size:
        raise WeightFileError(
            f"{str(path)!r} is cut short: {size:,} bytes, but its tensors need {start + end:,} "
            "(copy or save the model again)"
        )
    if start + end < size:
        raise WeightFileError(f"{str(path)!r} has {size - start - end:,} bytes after its last tensor")


def check_torch_file(path: Path) -> None:
    """A zipped ``torch.save`` file opens as a zip (its directory is at the end); older pickles pass."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError):
        raise WeightFileError(f"{str(path)!r} is cut short or damaged (not a complete torch.save file)") from None


def _indexed(index: Path) -> list[Path]:
    """The shard files a ``*.index.json`` names, each of which must exist."""
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        weight_map = None
    if not isinstance(weight_map, dict):
        raise WeightFileError(f"{str(index)!r} is not a shard index (no weight_map mapping)")
    shards = [index.parent / str(name) for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise WeightFileError(f"{str(shard)!r} does not exist (named by {index.name})")
    return shards


def loaded_weight_files(directory: Path) -> list[Path]:
    """The files ``from_pretrained`` reads weights from, in its order of preference: one safetensors
    file, safetensors shards, one ``torch.save`` file, its shards (other files in the folder are not read)."""
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (directory / single).is_file():
            return [directory / single]
        if (directory / index).is_file():
            return _indexed(directory / index)
    return []


def check_weight_files(directory: Path) -> None:
    """Every weight file the directory loads from is complete."""
    for path in loaded_weight_files(directory):
        if path.suffix == ".safetensors":
            check_safetensors(path)
        else:
            check_torch_file(path)
