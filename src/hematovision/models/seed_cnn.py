"""The original HematoVision baseline: a small Sequential CNN trained from scratch."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import HematoVisionError
from .registry import register_model


class SeedCNN(nn.Sequential):
    """Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Conv2D(128)-MaxPool-Flatten-Dense(128)-Dropout-Dense.

    The Keras original ended in a softmax trained with sparse categorical cross-entropy;
    here the model returns logits and training uses ``F.cross_entropy``, the same loss.
    Item 0 is the convolutional block and the rest the dense head, so the state dict keeps
    the plain Sequential's names; timm's interface splits the two.
    """

    def __init__(self, num_classes: int, input_size: int = 128):
        features = nn.Sequential(
            nn.Conv2d(3, 32, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = features(torch.zeros(1, 3, input_size, input_size)).numel()
        super().__init__(
            features,
            nn.Flatten(),
            nn.Linear(flat, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self[0](x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        for layer in list(self)[1:]:
            features = layer(features)
        return features

    def get_classifier(self) -> nn.Module:
        """The dense head (not a single linear layer over pooled features: no exact CAM)."""
        return nn.Sequential(*list(self)[1:])


@register_model(
    "seed-cnn", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), licence="Apache-2.0 (HematoVision)"
)  # the original scaled pixels to [0, 1] only
def seed_cnn(
    num_classes: int, pretrained: bool = False, input_size: int = 128, weights: str | None = None
) -> SeedCNN:
    if pretrained or weights:
        raise HematoVisionError("seed-cnn is trained from scratch; it has no pretrained weights")
    return SeedCNN(num_classes, input_size)
