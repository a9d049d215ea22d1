"""Image-folder splits for image classifiers: one subfolder per class, read with PIL, no torchvision.

A class folder is named after one of the model's labels (``config.label2id``) or is a class index
(``0``, ``1``, ...). Files are shuffled once with a fixed seed, so the first calibration batches
already hold every class, and decoded batch by batch with the model's image processor, converted to
the model's number of channels (a grayscale model gets grayscale images). ``check_image_split`` opens
every file once before a job starts, so a damaged image is one line naming it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from prunehive.workers.tasks.base import Batch, TaskError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # PIL's mode for a model's number of input channels


def image_mode(channels: int, what: str) -> str:
    """The PIL mode images are converted to for a model of ``channels`` input channels."""
    if channels not in MODES:
        raise TaskError(f"{what}: a model of {channels} input channels (config.json num_channels) is not supported")
    return MODES[channels]


def class_index(folder: str, label2id: dict[str, int], num_labels: int, what: str) -> int:
    """The model's label id for a class folder: its label name, else its number."""
    if folder in label2id:
        return int(label2id[folder])
    if folder.isdigit() and int(folder) < num_labels:
        return int(folder)
    labels = ", ".join(list(label2id)[:8]) + (", ..." if len(label2id) > 8 else "")
    raise TaskError(
        f"{what}: class folder {folder!r} is neither one of the model's labels ({labels}) "
        f"nor a class index below {num_labels}"
    )


def image_folder(root: Path, label2id: dict[str, int], num_labels: int, seed: int, what: str) -> list[tuple[Path, int]]:
    """Every image under ``root/<class>/`` with its label id, in a fixed shuffled order."""
    if not root.is_dir():
        raise TaskError(f"{what}: {str(root)!r} is not a directory of class folders")
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = class_index(folder.name, label2id, num_labels, what)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                items.append((path, label))
    if not items:
        raise TaskError(f"{what}: no images under {str(root)!r} (expected one subfolder per class)")
    random.Random(seed).shuffle(items)
    return items


def check_image_split(root: Path, label2id: dict[str, int], num_labels: int, what: str) -> None:
    """Every class folder names a label and every image file opens and verifies (PIL ``verify``)."""
    for path, _ in image_folder(root, label2id, num_labels, 0, what):
        try:
            with Image.open(path) as img:
                img.verify()
        except UnidentifiedImageError:
            raise TaskError(f"{what}: {str(path)!r} is not an image (PIL cannot identify its format)") from None
        except Exception as exc:  # PIL raises several kinds for damaged files (OSError, SyntaxError, ...)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TaskError(f"{what}: {str(path)!r} is not a readable image ({reason})") from None


def image_batches(
    items: list[tuple[Path, int]], processor: Any, rows: int, dtype: torch.dtype, mode: str = "RGB"
) -> Iterator[Batch]:
    """(pixel_values, labels) batches of ``rows`` images in PIL ``mode``, decoded as they are needed."""
    for start in range(0, len(items), rows):
        part = items[start : start + rows]
        images = []
        for path, _ in part:
            with Image.open(path) as img:
                images.append(img.convert(mode))
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(dtype)
        yield pixels, torch.tensor([label for _, label in part], dtype=torch.int64)
