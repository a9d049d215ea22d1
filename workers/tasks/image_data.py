"""Image-folder splits for image classifiers: one subfolder per class, read with PIL, no torchvision.

A class folder is named after one of the model's labels (``config.label2id``) or is a class index
(``0``, ``1``, ...). Files are shuffled once with a fixed seed, so the first calibration batches
already hold every class, and decoded batch by batch with the model's image processor.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from prunehive.workers.tasks.base import Batch, TaskError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


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


def image_batches(items: list[tuple[Path, int]], processor: Any, rows: int, dtype: torch.dtype) -> Iterator[Batch]:
    """(pixel_values, labels) batches of ``rows`` images, decoded as they are needed."""
    from PIL import Image

    for start in range(0, len(items), rows):
        part = items[start : start + rows]
        images = []
        for path, _ in part:
            with Image.open(path) as img:
                images.append(img.convert("RGB"))
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(dtype)
        yield pixels, torch.tensor([label for _, label in part], dtype=torch.int64)
