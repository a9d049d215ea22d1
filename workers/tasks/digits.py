"""Built-in classification tasks on scikit-learn's bundled 8x8 digits (no download needed).

The data is fixed everywhere: scikit-learn bundles the digits, and the split is seeded. The seed-0 models
are shipped with the package (see ``shipped``), so every machine prunes the same weights; other seeds or
recipes are trained deterministically on first use and cached.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from prunehive.workers.tasks.base import Batch, Split, Task
from prunehive.workers.tasks.shipped import check_shipped, deterministic, shipped_path


class _DigitsTask(Task):
    """Shared data: a stratified 60/20/20 split of the 1797 digits, standardised on train."""

    quality = "accuracy"
    batch_size = 64
    eval_batch_size = 1024
    train_steps = 1500
    lr = 2e-3
    train_threads = 1  # a tiny model: more threads only add synchronisation

    @cached_property
    def _splits(self) -> dict[str, Batch]:
        from sklearn.datasets import load_digits  # local: keeps scikit-learn out of preflight (spec checking)
        from sklearn.model_selection import train_test_split  # local: keeps scikit-learn out of preflight

        data = load_digits()
        x, y = data.data.astype("float32") / 16.0, data.target
        x_train, x_rest, y_train, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=self.seed)
        x_val, x_test, y_val, y_test = train_test_split(
            x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=self.seed
        )
        mean, std = x_train.mean(0), x_train.std(0) + 1e-3
        return {
            name: (self._shape(torch.from_numpy((xs - mean) / std)), torch.from_numpy(ys).long())
            for name, xs, ys in (("train", x_train, y_train), ("validation", x_val, y_val), ("test", x_test, y_test))
        }

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def split(self, name: Split) -> Batch:
        return self._splits[name]

    trains_own_model = True  # shipped or trained by its recipe: federated runs start fresh

    def load_model(self) -> nn.Module:
        """The shipped weights when this is the shipped recipe and seed, else trained once and cached."""
        path = shipped_path(self.name, self.fingerprint())
        if path is None:
            return self._load_or_train()

        state = load_file(path)
        check_shipped(self.name, state)
        model = self.architecture()
        model.load_state_dict(state)
        return model

    def _train_dense(self, model: nn.Module) -> None:
        with deterministic():
            self.train(model, self.train_steps)

    def save_weights(self, model: nn.Module, path: Path) -> None:
        """The trained weights as one safetensors file, as they are shipped."""
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


class DigitsMLP(_DigitsTask):
    name = "digits-mlp"
    description = "5-layer MLP on scikit-learn's 8x8 digits (accuracy)"

    def architecture(self) -> nn.Module:
        dims = [64, 256, 256, 128, 64, 10]
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i, (a, b) in enumerate(zip(dims, dims[1:], strict=False), start=1):
            layers[f"fc{i}"] = nn.Linear(a, b)
            if i < len(dims) - 1:
                layers[f"relu{i}"] = nn.ReLU()
        return nn.Sequential(layers)


class DigitsCNN(_DigitsTask):
    name = "digits-cnn"
    description = "3 conv + 2 linear CNN on scikit-learn's 8x8 digits (accuracy)"
    train_steps = 1200

    def _shape(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 1, 8, 8)

    def architecture(self) -> nn.Module:
        return nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(1, 32, 3, padding=1)),
                    ("relu1", nn.ReLU()),
                    ("conv2", nn.Conv2d(32, 64, 3, padding=1)),
                    ("relu2", nn.ReLU()),
                    ("pool2", nn.MaxPool2d(2)),
                    ("conv3", nn.Conv2d(64, 64, 3, padding=1)),
                    ("relu3", nn.ReLU()),
                    ("pool3", nn.MaxPool2d(2)),
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(64 * 2 * 2, 128)),
                    ("relu4", nn.ReLU()),
                    ("fc2", nn.Linear(128, 10)),
                ]
            )
        )
