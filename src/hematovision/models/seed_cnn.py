"""The original HematoVision baseline: a small Sequential CNN trained from scratch."""

from __future__ import annotations

import torch
from torch import nn


def seed_cnn(num_classes: int, input_size: int = 128) -> nn.Sequential:
    """Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Conv2D(128)-MaxPool-Flatten-Dense(128)-Dropout-Dense.

    The Keras original ended in a softmax trained with sparse categorical cross-entropy;
    here the model returns logits and training uses ``F.cross_entropy``, the same loss.
    """
    features = nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2),
    )
    with torch.no_grad():
        flat = features(torch.zeros(1, 3, input_size, input_size)).numel()
    return nn.Sequential(
        features, nn.Flatten(),
        nn.Linear(flat, 128), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )
