"""A worked example of a user task: ``prunehive prune --task examples.my_task:make_task``.

Subclass ``Task``, say where the data comes from (``split``) and what the model is
(``architecture``); training, caching, calibration and evaluation come from the base class.
"""

from __future__ import annotations

import torch
from torch import nn

from prunehive.workers.tasks.base import Batch, Split, Task


class WineTask(Task):
    """scikit-learn's bundled wine data: 13 features, 3 cultivars."""

    name = "wine-mlp"
    quality = "accuracy"
    description = "MLP on scikit-learn's wine data"
    train_steps = 400
    train_threads = 1

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        from sklearn.datasets import load_wine
        from sklearn.model_selection import train_test_split

        x, y = load_wine(return_X_y=True)
        x = (x - x.mean(0)) / x.std(0)
        x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
        x_va, x_te, y_va, y_te = train_test_split(x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed)
        self._data = {
            s: (torch.tensor(a, dtype=torch.float32), torch.tensor(b))
            for s, a, b in (("train", x_tr, y_tr), ("validation", x_va, y_va), ("test", x_te, y_te))
        }

    def split(self, name: Split) -> Batch:
        return self._data[name]

    def architecture(self) -> nn.Module:
        return nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))


def make_task(seed: int = 0) -> Task:
    return WineTask(seed=seed)
