"""``digits-cnn-bn``: the digits CNN with a BatchNorm after every convolution.

Federated pruning methods that read batch-norm statistics (FedTiny's adaptive BN selection) need a
model that has them; the plain ``digits-cnn`` has none. Same data, split and recipe as ``digits-cnn``;
no weights are shipped, so a central use trains it once and caches it (federated runs start fresh).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from prunehive.workers.tasks.digits import DigitsCNN


class DigitsCNNBN(DigitsCNN):
    name = "digits-cnn-bn"
    description = "3 conv (each with BatchNorm) + 2 linear CNN on scikit-learn's 8x8 digits (accuracy)"

    def architecture(self) -> nn.Module:
        return nn.Sequential(
            OrderedDict(
                [
                    ("conv1", nn.Conv2d(1, 32, 3, padding=1)),
                    ("bn1", nn.BatchNorm2d(32)),
                    ("relu1", nn.ReLU()),
                    ("conv2", nn.Conv2d(32, 64, 3, padding=1)),
                    ("bn2", nn.BatchNorm2d(64)),
                    ("relu2", nn.ReLU()),
                    ("pool2", nn.MaxPool2d(2)),
                    ("conv3", nn.Conv2d(64, 64, 3, padding=1)),
                    ("bn3", nn.BatchNorm2d(64)),
                    ("relu3", nn.ReLU()),
                    ("pool3", nn.MaxPool2d(2)),
                    ("flatten", nn.Flatten()),
                    ("fc1", nn.Linear(64 * 2 * 2, 128)),
                    ("relu4", nn.ReLU()),
                    ("fc2", nn.Linear(128, 10)),
                ]
            )
        )
