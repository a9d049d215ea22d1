"""``task: {hf: DIR, data: ...}`` for an image classifier: any local ``AutoModelForImageClassification``.

Images come from class folders (see ``image_data``) through the model's own image processor; the
``train`` split is the calibration folder. The prunable layers are the Linear and Conv2d layers inside
the model's repeated blocks (ViT's encoder layers, ResNet's stages), never the stem or the classifier
head. Quality is accuracy. Images are converted to the model's number of input channels
(``config.num_channels``), so a grayscale model reads grayscale images.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from prunehive.workers.tasks.base import Batch, QualityKind, Split, Task, TaskError
from prunehive.workers.tasks.hf_load import (
    DTYPES,
    LOCAL_ONLY,
    block_layers,
    fresh_model,
    load_image_classifier,
    load_image_processor,
    mlp_inputs,
)
from prunehive.workers.tasks.image_data import check_image_split, image_batches, image_folder, image_mode
from prunehive.workers.tasks.spec import HFTaskSpec
from prunehive.workers.tasks.training import CachedStream

SPLIT_FIELDS: dict[str, str] = {"train": "calibration", "validation": "validation", "test": "test"}
CACHE_BYTES = 1 << 30  # a split's decoded pixels are kept in memory when they fit in this much


class HFImageTask(Task):
    """An image classifier from a spec's ``task:`` mapping, scored on the mapping's image folders."""

    quality: ClassVar[QualityKind] = "accuracy"
    description: ClassVar[str] = "A local Hugging Face image classifier on your image folders (accuracy)"
    batch_size: int = 32
    eval_batch_size: int = 64

    def __init__(self, spec: HFTaskSpec, seed: int = 0) -> None:
        super().__init__(seed)
        self.spec = spec
        self.name = spec.label  # type: ignore[misc]  # an instance's own name, for messages
        self._processor: Any = None
        self._config: Any = None
        self._streams: dict[str, CachedStream] = {}

    def load_model(self) -> nn.Module:
        model = load_image_classifier(self.spec.hf, self.spec.dtype)
        self._config = model.config
        return model

    def architecture(self) -> nn.Module:
        return fresh_model(self.spec.hf, "image-classification")

    def _model_config(self) -> Any:
        if self._config is None:
            # local: keeps transformers out of spec checking (preflight builds the task)
            from transformers import AutoConfig

            self._config = AutoConfig.from_pretrained(self.spec.hf, **LOCAL_ONLY)
        return self._config

    def _label_ids(self) -> tuple[dict[str, int], int]:
        config = self._model_config()
        return {str(k): int(v) for k, v in config.label2id.items()}, int(config.num_labels)

    def _image_mode(self) -> str:
        """The PIL mode for the model's input channels; the processor's normalisation must agree with it."""
        channels = int(getattr(self._model_config(), "num_channels", 3))
        mode = image_mode(channels, "task.hf")
        if self._processor is None:
            self._processor = load_image_processor(self.spec.hf)
        mean = getattr(self._processor, "image_mean", None) if getattr(self._processor, "do_normalize", True) else None
        if isinstance(mean, (list, tuple)) and len(mean) != channels:
            raise TaskError(
                f"task.hf: {str(self.spec.hf / 'preprocessor_config.json')!r} normalises {len(mean)} channels "
                f"(image_mean), but the model takes {channels} (config.json num_channels)"
            )
        return mode

    def check_inputs(self) -> None:
        """Before a job starts: the processor fits the model, every split's class folders name the
        model's labels, and every image opens, so a bad file is one line naming it."""
        self._image_mode()
        label2id, num_labels = self._label_ids()
        for field in SPLIT_FIELDS.values():
            check_image_split(getattr(self.spec.data, field), label2id, num_labels, f"task.data.{field}")

    def loader(self, name: Split) -> Iterable[Batch]:
        if name not in self._streams:
            field = SPLIT_FIELDS[name]
            label2id, num_labels = self._label_ids()
            what = f"task.data.{field}"
            items = image_folder(getattr(self.spec.data, field), label2id, num_labels, self.seed, what)
            mode = self._image_mode()
            rows = self.batch_size if name == "train" else self.eval_batch_size
            dtype = DTYPES[self.spec.dtype]

            def source() -> Iterable[Batch]:
                return image_batches(items, self._processor, rows, dtype, mode)

            self._streams[name] = CachedStream(source, limit=CACHE_BYTES)
        return self._streams[name]

    def split(self, name: Split) -> Batch:
        """The whole split in memory, for federated clients that partition the train split."""
        batches = list(self.loader(name))
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])

    @property
    def in_memory(self) -> bool:
        return False  # ``split`` exists for federated runs only; searches stream the folders

    def layer_blocks(self, model: nn.Module) -> dict[str, str]:
        return block_layers(model, (nn.Linear, nn.Conv2d))

    def prunable_layers(self, model: nn.Module) -> list[str]:
        return list(self.layer_blocks(model))

    def channel_prunable_layers(self, model: nn.Module) -> list[str]:
        """ViT's MLP inputs; for convolutional blocks, every layer but the last of the stack."""
        names = self.prunable_layers(model)
        return mlp_inputs(names) or names[:-1]
