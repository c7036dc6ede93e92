"""Models a config can name in `arch.type`. They return log-probabilities (for nll_loss)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from base import BaseModel


class DigitsModel(BaseModel):
    """A small MLP for the 8x8 digits: 64 -> hidden (x depth) -> 10 (any flat input size
    through `in_features`, e.g. 784 for 28x28 images)."""

    def __init__(self, num_classes: int = 10, hidden: int = 128, depth: int = 1, dropout: float = 0.0,
                 in_features: int = 64):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = hidden
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)  # the head: `--init-skip fc` starts it fresh

    def forward(self, x):
        return F.log_softmax(self.fc(self.features(x)), dim=1)


class MnistModel(BaseModel):
    """The classic template's MNIST CNN."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
        self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.dropout(x, training=self.training)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)
