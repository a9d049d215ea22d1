"""A worked example of a user task: your own model, your own checkpoint, your own DataLoader.

    prunehive prune --task examples.my_task:make_task --sparsity 0.5

A task says where the trained model comes from (``load_model``) and how to read each split
(``loader``: a DataLoader or any iterable of ``(inputs, targets)`` batches). Calibration, evaluation
and recovery fine-tuning come from the base class. The checkpoint is a plain state dict next to this
file (and next to your spec); here ``train_checkpoint`` writes it on first use, standing in for the
training script you already have.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from prunehive.workers.tasks.base import Batch, Split, Task

CHECKPOINT = Path(__file__).with_name("wine-mlp.pt")


class WineMLP(nn.Module):
    """Your model class: 13 wine features in, 3 cultivars out."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(13, 64), nn.Linear(64, 64), nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def wine_data(seed: int = 0) -> dict[str, TensorDataset]:
    """scikit-learn's bundled wine data, standardised, in a stratified 60/20/20 split."""
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
    return {
        s: TensorDataset(torch.tensor(a, dtype=torch.float32), torch.tensor(b))
        for s, a, b in (("train", x_tr, y_tr), ("validation", x_va, y_va), ("test", x_te, y_te))
    }


class WineTask(Task):
    name = "wine-mlp"
    quality = "accuracy"  # or "perplexity" for language models
    description = "Your own MLP checkpoint on scikit-learn's wine data"

    def __init__(self, seed: int = 0, checkpoint: Path = CHECKPOINT) -> None:
        super().__init__(seed)
        self.checkpoint = checkpoint
        self.data = wine_data(seed)

    def load_model(self) -> nn.Module:
        """Your architecture with your trained weights: loaded once per worker, never retrained."""
        if not self.checkpoint.exists():
            train_checkpoint(self.checkpoint, self.data["train"])
        model = WineMLP()
        model.load_state_dict(torch.load(self.checkpoint, map_location="cpu", weights_only=True))
        return model

    def loader(self, name: Split) -> Iterable[Batch]:
        """``train`` feeds calibration (and recovery fine-tuning); ``validation`` is searched, ``test`` reported."""
        return DataLoader(self.data[name], batch_size=32, shuffle=False)


def make_task(seed: int = 0) -> Task:
    return WineTask(seed=seed)


def train_checkpoint(path: Path, data: TensorDataset, steps: int = 400) -> None:
    """Stands in for your own training: fits the MLP and saves its state dict."""
    torch.manual_seed(0)
    model = WineMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data.tensors
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)  # two workers starting together never read half a file
